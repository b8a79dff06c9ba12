"""Why did a policy answer what it answered: the reason rules that fired for one input.

regorus has no evaluation trace, so `explain` works per rule definition instead. Every partial-set rule of
the queried package (`deny_reasons contains "geo_fenced" if {...}`) is copied under a private name into its
own module and evaluated alone with the interpreter on the same input and data; whatever that copy yields
is what that one definition contributed. This is exact for each definition's body, but it does not descend
into the helper rules a body reads (`tenant`, `write`, another package's decision): those appear only as
the definition's source text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import regorus

from ig_gate.bundles.engine import Engine, _compile_error, _plain
from ig_gate.bundles.rego_ast import package_path

PRECISION = (
    "each partial-set rule definition of the queried package was evaluated alone on this input (exact per "
    "definition); rules those bodies read (helpers, other packages) are not traced"
)
_PREFIX = "__ig_explain_"


@dataclass(frozen=True, slots=True)
class ReasonRule:
    """One partial-set rule definition: where it is and its source text."""

    rule: str  # data.pkg.name
    file: str
    line: int
    source: str


def _set_rules(ast: list[dict[str, Any]], modules: Mapping[str, str], package: str) -> list[ReasonRule]:
    """The `name contains ... if ...` definitions (simple names) of `package` (e.g. `ig.zt`)."""
    found = []
    for module in ast:
        file = module["source"]["file"]
        text = modules[file].encode()
        if _package_of(module) != package:
            continue
        spans = [next(iter(rule.values()))["span"] for rule in module["ast"]["rules"]]
        ends = [span["start"] for span in spans[1:]] + [len(text)]
        for rule, span, end in zip(module["ast"]["rules"], spans, ends, strict=True):
            head = rule.get("Spec", {}).get("head", {}).get("Set")
            if head is None or "Var" not in head["refr"]:
                continue
            source = _trim(text[span["start"]:end].decode())  # a span ends before a closing quote
            name = f"data.{package}.{head['refr']['Var']['value']}"
            found.append(ReasonRule(name, file, span["line"], source))
    return found


def _trim(source: str) -> str:
    """A rule's text up to the next rule, without the blank and comment lines that belong to the next."""
    lines = source.rstrip().splitlines()
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()
    return "\n".join(lines)


def _package_of(module: dict[str, Any]) -> str:
    return ".".join(package_path(module) or [])


def explain(modules: Mapping[str, str], data: Mapping[str, Any], query: str, input: Any) -> dict[str, Any]:
    """The query's result for `input` and, for every reason-set rule definition of its package that yields
    something, what it yielded and whether that reached the result's `reasons`."""
    result = Engine(modules, data).evaluate(query, input)
    package = query.removeprefix("data.").rsplit(".", 1)[0]
    interpreter = regorus.Engine()
    for path, text in sorted(modules.items()):
        try:
            interpreter.add_policy(path, text)
        except Exception as exc:
            raise _compile_error(exc) from exc
    rules = _set_rules(json.loads(interpreter.get_ast_as_json()), modules, package)
    for index, rule in enumerate(rules):
        name = rule.rule.rsplit(".", 1)[1]
        copy = _PREFIX + str(index) + rule.source.removeprefix(name)
        header = _module_header(modules[rule.file], package)
        interpreter.add_policy(f"{_PREFIX}{index}.rego", f"{header}\n{copy}\n")
    interpreter.add_data_json(json.dumps(dict(data)))
    interpreter.set_input_json(json.dumps(input))
    decided = set(result.get("reasons", ())) if isinstance(result, dict) else set()
    fired = []
    for index, rule in enumerate(rules):
        for value in _plain(interpreter.eval_rule(f"data.{package}.{_PREFIX}{index}")) or ():
            fired.append({
                "reason": value, "in_result": value in decided, "rule": rule.rule,
                "file": rule.file, "line": rule.line, "source": rule.source,
            })
    fired.sort(key=lambda item: (not item["in_result"], str(item["reason"]), item["file"], item["line"]))
    unexplained = sorted(str(r) for r in decided - {item["reason"] for item in fired})
    return {
        "query": query, "result": result, "rules": fired, "unexplained": unexplained, "precision": PRECISION,
    }


def _module_header(text: str, package: str) -> str:
    """The package clause and the imports of the module a rule came from, so its copy resolves the same."""
    imports = [line for line in text.splitlines() if line.lstrip().startswith("import ")]
    return "\n".join([f"package {package}", *imports])
