"""`ig-gate config check FILE | schema | reference`: a configuration checked, and the schema described.

`check` loads FILE as `ig-gate serve` would (IG_GATE_* variables included) and checks that every
setting marked *file* names an existing file; exit 0 with a one-line summary, or 2 with one line naming
the key (and for YAML the file, line and column). `schema` prints the JSON Schema for editors;
`reference` prints docs/config.md. Both are generated from the settings dataclasses.
"""

from __future__ import annotations

import argparse
import json
import sys

from ig_gate.middleware.settings import ConfigError, Settings, check_files, load_settings

USAGE = 2
CHECK_EPILOG = """exit status: 0 valid (a one-line summary on stdout), 2 invalid or unreadable (one line on
stderr naming the key path and, for YAML, the file, line and column)"""


def register_config(subparsers: argparse._SubParsersAction) -> None:
    """`ig-gate config check FILE`, `ig-gate config schema`, `ig-gate config reference`."""
    config = subparsers.add_parser("config", help="check a configuration file; print its schema or reference")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate a configuration file as `ig-gate serve` would",
        description="Load FILE with the IG_GATE_* environment overrides, validate every setting and check "
        "that each file-valued setting names an existing file. Nothing is fetched or started.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", metavar="FILE", help="ig-gate.yaml")
    check.set_defaults(handler=_check)
    schema = actions.add_parser("schema", help="print the JSON Schema of the configuration (for editors)")
    schema.set_defaults(handler=_schema)
    reference = actions.add_parser("reference", help="print the configuration reference (docs/config.md)")
    reference.set_defaults(handler=_reference)


def _check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
        check_files(settings)
    except ConfigError as exc:
        print(f"ig-gate: {exc}", file=sys.stderr)
        return USAGE
    print(f"ok: {args.file}: {summary(settings)}")
    return 0


def summary(settings: Settings) -> str:
    """What a configuration enforces, in one line."""
    bundle = settings.bundle
    if bundle.remote_opa_url:
        policy = f"remote PDP {bundle.remote_opa_url}"
    elif bundle.registry:
        policy = f"bundles from {bundle.registry}/{bundle.repository}:{bundle.channel}"
    else:
        policy = f"bundle file {bundle.path}"
    key = bundle.verification_key
    signed = "unsigned allowed" if bundle.allow_unsigned else f"verified with {key}" if key else "no key set"
    log = settings.decision_log.path or "off"
    return (
        f"{policy} ({signed}); tokens from {settings.identity.issuer}; failure_mode {settings.failure_mode}; "
        f"decision log {log}; sidecar on {settings.server.host}:{settings.server.port}"
    )


def _schema(args: argparse.Namespace) -> int:
    from ig_gate.middleware.config_reference import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _reference(args: argparse.Namespace) -> int:
    from ig_gate.middleware.config_reference import markdown

    sys.stdout.write(markdown())
    return 0
