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

from ig_gate.middleware.decision_log import verify_chain
from ig_gate.sidecar.serve import register_serve

USAGE = 2


def _decisions_verify(args: argparse.Namespace) -> int:
    try:
        report = verify_chain(args.file)
    except OSError as exc:
        print(f"ig-gate: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE
    if not report.ok:
        print(f"{args.file}:{report.first_bad_line}: {report.reason}", file=sys.stderr)
        return 1
    print(json.dumps({"file": str(args.file), **report.to_json()}))
    return 0


def register_decisions(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate decisions verify FILE`: check a decision log's hash chain."""
    decisions = subparsers.add_parser("decisions", help="decision-log tools")
    actions = decisions.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="verify the hash chain of a decision log",
        description="Check that no line of a decision log was edited, removed, reordered or truncated.",
        epilog="exit status: 0 the chain verifies (JSON summary on stdout), 1 it does not (the first bad "
        "line on stderr), 2 usage error or unreadable file",
    )
    verify.add_argument("file", metavar="FILE", help="a decision log (JSON lines)")
    verify.set_defaults(handler=_decisions_verify)


def build_parser() -> argparse.ArgumentParser:
    """The `ig-gate` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="ig-gate", description="ig-gate zero-trust sidecar")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_decisions(subparsers)
    register_serve(subparsers)
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
