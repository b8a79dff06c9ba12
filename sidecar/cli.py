"""`ig-gate`: the sidecar's command line.

Exit codes: 0 ok, 1 check failed (one line on stderr naming what and where), 2 usage.
Each subcommand group registers itself with `register_<group>(subparsers)` and sets
`handler(args) -> int`, so `serve` and later groups plug in the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ig_gate.bundles.cli_args import package_version
from ig_gate.middleware.decision_log import log_files, verify_chain
from ig_gate.sidecar.analytics_cli import register_analytics
from ig_gate.sidecar.autoscale_cli import register_autoscale
from ig_gate.sidecar.config_cli import register_config
from ig_gate.sidecar.decisions_explain import register_explain
from ig_gate.sidecar.dev_cli import register_dev
from ig_gate.sidecar.serve import register_serve

USAGE = 2


def _decisions_verify(args: argparse.Namespace) -> int:
    """Verify each chain named by the targets; one report per file (JSON on stdout, or a line on stderr)."""
    status = 0
    for target in args.targets:
        try:
            files = log_files(target)
        except OSError as exc:
            print(f"ig-gate: cannot read {target}: {exc.strerror or exc}", file=sys.stderr)
            status = USAGE
            continue
        for path in files:
            status = max(status, _verify_one(path))
    return status


def _verify_one(path: Path) -> int:
    try:
        report = verify_chain(path)
    except OSError as exc:
        print(f"ig-gate: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE
    if not report.ok:
        print(f"{path}:{report.first_bad_line}: {report.reason}", file=sys.stderr)
        return 1
    print(json.dumps({"file": str(path), **report.to_json()}))
    return 0


def register_decisions(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate decisions verify PATH...`: check decision logs' hash chains."""
    decisions = subparsers.add_parser("decisions", help="decision-log tools")
    actions = decisions.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="verify the hash chains of decision logs",
        description="Check that no line of a decision log was edited, removed, reordered or truncated. "
        "Every writer process keeps its own file and chain (decisions.jsonl, decisions.1.jsonl, ... for "
        "`serve --workers N`): give the directory, a glob, or the files; each file is verified and "
        "reported on its own.",
        epilog="exit status: 0 every chain verifies (one JSON summary per file on stdout), 1 one does not "
        "(its file and first bad line on stderr), 2 usage error or unreadable file",
    )
    verify.add_argument(
        "targets", nargs="+", metavar="PATH",
        help="a decision log (JSON lines), a directory (its *.jsonl files) or a glob pattern",
    )
    verify.set_defaults(handler=_decisions_verify)
    register_explain(actions)


def build_parser() -> argparse.ArgumentParser:
    """The `ig-gate` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="ig-gate", description="ig-gate zero-trust sidecar")
    parser.add_argument("--version", action="version", version=f"ig-gate {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_decisions(subparsers)
    register_serve(subparsers)
    register_config(subparsers)
    register_autoscale(subparsers)
    register_analytics(subparsers)
    register_dev(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `ig-gate` command; returns the exit code (argparse usage errors give 2)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
