"""Facts the engine needs from regorus's parsed AST (`Engine.get_ast_as_json()`, gordon-to-regorus 0.13).

Rule paths become the compiled program's entry points, rules named `test_*` are Rego unit tests, and
`vm_hazards` finds the constructs where regorus's compiled VM departs from Rego semantics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TEST_MODULE_SUFFIX = "_test.rego"
TEST_RULE_PREFIX = "test_"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule definition: its full path (`data.pkg.name`), where it is, and whether it is a function."""

    path: str
    file: str
    line: int
    is_function: bool

    @property
    def is_plain(self) -> bool:
        """True when every path segment is an identifier (the only paths regorus accepts as entry points)."""
        return all(part.isidentifier() for part in self.path.split("."))

    @property
    def is_test(self) -> bool:
        """True for a Rego unit test (a rule named test_*)."""
        return self.path.rsplit(".", 1)[-1].startswith(TEST_RULE_PREFIX)


def is_test_module(file: str) -> bool:
    """True for a *_test.rego module (unit tests; never compiled into the serving program)."""
    return file.endswith(TEST_MODULE_SUFFIX)


def ref_path(node: dict[str, Any]) -> list[str]:
    """The constant prefix of a ref (`a.b["c"][x].d` -> ["a", "b", "c"]): stops at the first variable part."""
    return _ref_parts(node)[0]


def package_path(module: dict[str, Any]) -> list[str] | None:
    """A parsed module's package path without `data` (`package a.b["c"]` -> ["a", "b", "c"]); None when a
    part is not a constant string."""
    parts, whole = _ref_parts(module["ast"]["package"]["refr"])
    return parts if whole else None


def _ref_parts(node: dict[str, Any]) -> tuple[list[str], bool]:
    """(constant prefix, whether the whole ref is constant)."""
    if "Var" in node:
        return [node["Var"]["value"]], True
    if "RefDot" in node:
        inner = node["RefDot"]
        parts, whole = _ref_parts(inner["refr"])
        return ([*parts, inner["field"][1]], True) if whole else (parts, False)
    if "RefBrack" in node:
        inner = node["RefBrack"]
        parts, whole = _ref_parts(inner["refr"])
        index = inner["index"]
        return ([*parts, index["String"]["value"]], True) if whole and "String" in index else (parts, False)
    return [], False


def _head(rule: dict[str, Any]) -> tuple[dict[str, Any], bool, int]:
    """(ref node, is_function, line) of a rule's head."""
    if "Default" in rule:
        default = rule["Default"]
        return default["refr"], False, default["span"]["line"]
    head = rule["Spec"]["head"]
    kind, body = next(iter(head.items()))
    return body["refr"], kind == "Func", rule["Spec"]["span"]["line"]


def rules(ast: list[dict[str, Any]]) -> list[Rule]:
    """Every rule of every module, in source order."""
    found: list[Rule] = []
    for module in ast:
        file = module["source"]["file"]
        package = ".".join(["data", *ref_path(module["ast"]["package"]["refr"])])
        for rule in module["ast"]["rules"]:
            ref, is_function, line = _head(rule)
            found.append(Rule(".".join([package, *ref_path(ref)]), file, line, is_function))
    return found


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def vm_hazards(ast: list[dict[str, Any]]) -> list[str]:
    """`file:line what` for every construct where regorus 0.13's compiled VM departs from Rego semantics.

    - a body-local `x := expr` whose right-hand side is undefined does not fail the body
      (`r if { x := input.missing; true }` is true there, undefined in Rego); unification `x = expr` is fine;
    - partial object rules with variable keys (`o[k] := v`) resolve conflicting values silently (last wins)
      where Rego raises a conflict error.
    Programs containing either are evaluated with the interpreter.
    """
    found = []
    for module in ast:
        file = module["source"]["file"]
        for rule in module["ast"]["rules"]:
            head = rule.get("Spec", {}).get("head", {}).get("Compr")
            if head is not None and head.get("assign") is not None and not _ref_parts(head["refr"])[1]:
                found.append(f"{file}:{rule['Spec']['span']['line']} partial object rule")
        for node in _walk(module["ast"]["rules"]):
            assign = node.get("AssignExpr")
            if isinstance(assign, dict) and assign.get("op") == "ColEq":
                found.append(f"{file}:{assign['span']['line']} body-local ':='")
    return found
