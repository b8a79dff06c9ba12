"""`ig-gate decisions explain DECISION_ID --log FILE_OR_DIR --bundle FILE --key PUB`: why was I refused?

The decision log holds each decision's policy input and the revision of the bundle that decided it. This
re-evaluates that input against the bundle the operator names, after verifying it and checking that its
revision is the logged one (another revision may decide differently, so it is refused), and shows which
reason rules fired (see `ig_gate.bundles.explain` for how precise that is).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ig_gate.bundles.errors import BundleError
from ig_gate.bundles.explain import explain
from ig_gate.bundles.signing import VerificationKey
from ig_gate.bundles.verify import VerifyOptions, verify_bundle
from ig_gate.errors import IgGateError, describe
from ig_gate.middleware.decision_log import log_files


class ExplainError(IgGateError):
    """The decision cannot be explained: not in the log, not a policy decision, or another bundle."""

    label = "cannot explain the decision"


def _entries(target: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for path in log_files(target):
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a torn last line; `decisions verify` reports it
                if isinstance(entry, dict):
                    yield path, number, entry


def find_decision(target: str, decision_id: str) -> tuple[str, dict[str, Any]]:
    """(`file:line`, entry) of the logged decision with this id (ExplainError when absent)."""
    for path, number, entry in _entries(target):
        if entry.get("decision_id") == decision_id:
            return f"{path}:{number}", entry
    raise ExplainError(f"decision {decision_id} is not in {target}")


def explain_decision(entry: dict[str, Any], bundle_path: Path, key_path: Path) -> dict[str, Any]:
    """The logged decision re-evaluated against the verified bundle of the same revision."""
    revision = (entry.get("bundles") or {}).get("ig", {}).get("revision")
    document = entry.get("input")
    if not revision or not isinstance(document, dict) or "session" not in document:
        reasons = (entry.get("result") or {}).get("reasons")
        raise ExplainError(
            f"decision {entry.get('decision_id')} ({entry.get('outcome')}, reasons {reasons}) was made "
            "before the policy was consulted (no token, bad token, no bundle): nothing to explain"
        )
    try:
        archive = bundle_path.read_bytes()
    except OSError as exc:
        raise ExplainError(f"--bundle {bundle_path}: {exc.strerror or exc}") from None
    key = VerificationKey.from_file(key_path)
    verified = verify_bundle(archive, VerifyOptions(key=key, allow_expired=True))
    if verified.revision != revision:
        raise ExplainError(
            f"--bundle {bundle_path} is revision {verified.revision}, but the decision was made with "
            f"revision {revision}: explaining it with another revision could show other reasons"
        )
    device = document.get("device")
    if isinstance(device, dict) and "reason" in device:  # logged beside the posture, not a policy input
        document = {**document, "device": {k: v for k, v in device.items() if k != "reason"}}
    query = "data." + str(entry.get("path", "ig/zt/decision")).replace("/", ".")
    report = explain(verified.bundle.modules, verified.bundle.data, query, document)
    return {
        "decision_id": entry.get("decision_id"),
        "timestamp": entry.get("timestamp"),
        "logged_result": entry.get("result"),
        "same_result": report["result"] == entry.get("result"),
        "bundle": {"revision": verified.revision, "digest": verified.digest, "verified": True},
        "input": document,
        **report,
    }


def _explain(args: argparse.Namespace) -> int:
    try:
        where, entry = find_decision(args.log, args.decision_id)
        report = explain_decision(entry, Path(args.bundle), Path(args.key))
    except (IgGateError, BundleError, OSError) as exc:
        print(f"ig-gate: {describe(exc)}", file=sys.stderr)
        return 1
    print(json.dumps({"logged_at": where, **report}, indent=2))
    return 0


def register_explain(actions: argparse._SubParsersAction) -> None:
    """`ig-gate decisions explain`."""
    parser = actions.add_parser(
        "explain",
        help="why a logged decision came out as it did",
        description="Find DECISION_ID in the decision log, verify --bundle with --key, check that it is the "
        "revision the decision was made with (refused otherwise), re-evaluate the logged input and show "
        "which reason rules fired (file:line and source). Each partial-set rule of the decision's package "
        "is evaluated alone on the input: exact per rule definition, but the helper rules a body reads are "
        "not traced.",
        epilog="exit status: 0 explained (JSON on stdout), 1 not found, another revision, or a bundle that "
        "does not verify (one line on stderr), 2 usage error",
    )
    parser.add_argument("decision_id", metavar="DECISION_ID", help="from the 403/401 body or the log")
    parser.add_argument("--log", required=True, metavar="FILE_OR_DIR", help="decision log, directory or glob")
    parser.add_argument("--bundle", required=True, metavar="FILE.tgz", help="the bundle that decided it")
    parser.add_argument("--key", required=True, metavar="PUB", help="the bundle's verification key")
    parser.set_defaults(handler=_explain)
