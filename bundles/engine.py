"""Rego evaluation with gordon-to-regorus: a compiled RVM program where it is safe, the interpreter otherwise.

regorus objects are thread-affine: touching one from another thread raises pyo3's PanicException (a
BaseException, not an Exception), and dropping one on another thread leaks it. So an `Engine` belongs to the
thread that built it, and `EnginePool` gives every thread its own, created lazily on that thread.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import regorus

from ig_gate.bundles import rego_ast
from ig_gate.bundles.errors import PolicyCompileError, PolicyEvalError

if TYPE_CHECKING:
    from ig_gate.bundles.archive import Bundle

log = logging.getLogger(__name__)

_UNDEFINED = '"<undefined>"'  # how the RVM spells an undefined result
_UNSUPPORTED = re.compile(r"not (yet )?supported")
_LOCATION = re.compile(r"-->\s*(?P<file>\S+?):(?P<line>\d+):(?P<col>\d+)")
_ERROR_LINE = re.compile(r"^error:\s*(?P<text>.+)$", re.MULTILINE)
_BRACKET_KEY = re.compile(r'\["([A-Za-z_][A-Za-z0-9_]*)"\]')
_PACKAGE_CLAUSE = re.compile(r"\A(?:\s+|#[^\n]*)*package[ \t]+(?P<ref>[^\n#]*)")  # after comments only
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _is_panic(exc: BaseException) -> bool:
    """pyo3's PanicException: a BaseException subclass that the module does not export."""
    return not isinstance(exc, Exception) and type(exc).__name__ == "PanicException"


def _text(exc: BaseException) -> str:
    """regorus's message without the Rust backtrace it appends when RUST_BACKTRACE is set."""
    return str(exc).split("Stack backtrace:", 1)[0].strip()


def _describe(exc: BaseException) -> str:
    """`file:line:col: message` when regorus names a location, else its first line."""
    text = _text(exc)
    where, what = _LOCATION.search(text), _ERROR_LINE.search(text)
    message = what["text"].strip() if what else (text.splitlines() or ["unknown error"])[0]
    return f"{where['file']}:{where['line']}:{where['col']}: {message}" if where else message


def _compile_error(exc: BaseException) -> PolicyCompileError:
    """A PolicyCompileError naming file:line:col, carrying regorus's whole report (the source excerpt with
    its caret) as `excerpt` for a person at a terminal."""
    error = PolicyCompileError(f"policy compile error in {_describe(exc)}")
    error.excerpt = _text(exc)
    return error


def _plain(value: Any) -> Any:
    """Interpreter results as JSON-friendly values: sets become sorted lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [_plain(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def _encode(value: Any) -> str:
    """JSON text for regorus; orjson because the stdlib encoder costs ~4 us of a ~20 us decision."""
    return orjson.dumps(value).decode()


def _normalize(query: str) -> str:
    """`data.a["b"]` -> `data.a.b`, the spelling of compiled entry points."""
    return _BRACKET_KEY.sub(r".\1", query.strip())


def package_paths(modules: Mapping[str, str]) -> dict[str, list[str] | None]:
    """The package path (see `rego_ast.package_path`) of each module that parses, parsed on the calling
    thread; a module that does not parse is left out (compiling it fails, so it never serves).

    A dotted package (`package a.b`) is read from what `add_policy` returns; one with brackets (whose
    strings may hold dots) from the module's AST, which costs ~100x more."""
    paths: dict[str, list[str] | None] = {}
    for path, text in sorted(modules.items()):
        parser = regorus.Engine()
        try:
            package = parser.add_policy(path, text)
        except Exception:
            continue
        clause = _PACKAGE_CLAUSE.match(text)
        if clause is not None and _DOTTED.fullmatch(clause["ref"].strip()):
            paths[path] = package.split(".")[1:]
        else:
            (module,) = json.loads(parser.get_ast_as_json())
            paths[path] = rego_ast.package_path(module)
    return paths


class Engine:
    """A thread-affine Rego engine over one bundle's modules and data; build one per thread."""

    def __init__(self, modules: Mapping[str, str], data: Mapping[str, Any], *, use_vm: bool = True) -> None:
        """Parse and compile every module (PolicyCompileError names file:line:col).

        The program is always compiled (to fail early); `use_vm=False` still evaluates with the interpreter.
        """
        self._owner = threading.get_ident()
        self._interpreter = regorus.Engine()
        for path, text in sorted(modules.items()):
            try:
                self._interpreter.add_policy(path, text)
            except Exception as exc:
                raise _compile_error(exc) from exc
        try:
            data_json = _encode(dict(data))
        except TypeError as exc:  # e.g. integers beyond 64 bits, which regorus cannot hold either
            raise PolicyCompileError(f"bundle data cannot be loaded: {exc}") from exc
        self._interpreter.add_data_json(data_json)
        ast = json.loads(self._interpreter.get_ast_as_json())
        rules = rego_ast.rules(ast)
        plain = [rule for rule in rules if rule.is_plain and not rule.is_function]
        self.rule_paths = frozenset(rule.path for rule in plain)
        self.tests = tuple(rule for rule in plain if rule.is_test)
        serving = [module for module in ast if not rego_ast.is_test_module(module["source"]["file"])]
        entry_points = sorted(
            {rule.path for rule in rego_ast.rules(serving) if rule.is_plain and not rule.is_function}
            - {rule.path for rule in self.tests}
        )
        self._vm, self.compiled_reason = self._compile(modules, data_json, entry_points, serving)
        if not use_vm:
            self._vm, self.compiled_reason = None, "interpreter requested"
        self.entry_points = frozenset(entry_points) if self._vm is not None else frozenset()

    @staticmethod
    def _compile(
        modules: Mapping[str, str], data_json: str, entry_points: list[str], serving: list[dict[str, Any]]
    ) -> tuple[regorus.Rvm | None, str]:
        """Compile every serving rule (fails early on unknown functions, bad refs); return (vm, why-not)."""
        if not entry_points:
            return None, "no rules to compile"
        sources = [(path, modules[path]) for path in sorted(modules) if not rego_ast.is_test_module(path)]
        try:
            program = regorus.Program.compile_from_modules(data_json, sources, entry_points)
        except Exception as exc:
            if _UNSUPPORTED.search(_text(exc)):
                reason = f"compiler limitation: {_describe(exc)}"
                log.warning("Rego policy runs on the (slower) interpreter: %s", reason)
                return None, reason
            raise _compile_error(exc) from exc
        hazards = rego_ast.vm_hazards(serving)
        if hazards:
            reason = f"compiled VM departs from Rego semantics at {', '.join(hazards[:3])}"
            log.warning("Rego policy runs on the (slower) interpreter: %s", reason)
            return None, reason
        vm = regorus.Rvm()
        vm.load_program(program)
        vm.set_data_json(data_json)
        return vm, ""

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Engine:
        """An engine over a bundle's Rego modules and merged data."""
        return cls(bundle.modules, bundle.data)

    @property
    def compiled(self) -> bool:
        """True when rule queries run on the compiled program (see `compiled_reason` otherwise)."""
        return self._vm is not None

    def evaluate(self, query: str, input: Mapping[str, Any]) -> Any:
        """The query's value for this input: JSON-friendly, None when undefined.

        Rule paths (`data.ig.zt.decision`, `data.ig.policies["admin"]`) run on the compiled program when
        there is one; anything else (packages, expressions) on the interpreter. Raises PolicyEvalError on
        evaluation errors, including use from another thread (a converted panic).
        """
        try:
            encoded = _encode(input)
            if query in self.entry_points:
                return self._execute(query, encoded)
            normalized = _normalize(query)
            if normalized in self.entry_points:
                return self._execute(normalized, encoded)
            return self._interpret(query, normalized, encoded)
        except Exception as exc:
            raise PolicyEvalError(f"evaluating {query}: {_describe(exc)}") from exc
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise PolicyEvalError(
                f"evaluating {query}: regorus engine panicked ({_text(exc)}); engines are per thread"
                f" (built on thread {self._owner}, used on {threading.get_ident()})"
            ) from exc

    def _execute(self, entry_point: str, encoded_input: str) -> Any:
        vm = self._vm
        assert vm is not None  # entry_points is empty without a program
        vm.set_input_json(encoded_input)
        text = vm.execute_entry_point(entry_point)
        return None if text == _UNDEFINED else orjson.loads(text)

    def _interpret(self, query: str, normalized: str, encoded_input: str) -> Any:
        self._interpreter.set_input_json(encoded_input)
        if normalized in self.rule_paths:
            return _plain(self._interpreter.eval_rule(normalized))
        results = self._interpreter.eval_query(query)["result"]
        return _plain(results[0]["expressions"][0]["value"]) if results else None

    def run_tests(self) -> list[RegoTestResult]:
        """Evaluate every test_* rule with the interpreter (tests may use `with`, which the VM lacks).

        A test passes when its value is exactly true; undefined, false or an error fail it.
        """
        results = []
        for path, rule in {rule.path: rule for rule in reversed(self.tests)}.items():
            try:
                value = self._interpreter.eval_rule(path)
            except Exception as exc:
                results.append(RegoTestResult(path, rule.file, False, _describe(exc)))
                continue
            error = None if value is True else f"result {_plain(value)!r}, expected true"
            results.append(RegoTestResult(path, rule.file, value is True, error))
        return sorted(results, key=lambda result: (result.file, result.name))


@dataclass(frozen=True, slots=True)
class RegoTestResult:
    """Outcome of one Rego unit test rule."""

    name: str
    file: str
    passed: bool
    error: str | None = None


def run_rego_tests(modules: Mapping[str, str], data: Mapping[str, Any]) -> list[RegoTestResult]:
    """Run every rule named test_* (OPA's convention; they live in *_test.rego files) on a fresh engine."""
    return Engine(modules, data).run_tests()


class EnginePool:
    """One `Engine` per thread, built lazily on the thread that evaluates.

    Engines are owned by their thread, not by the pool: a pool dropped on thread A must not drop thread B's
    engine (regorus leaks it and complains), so each thread keeps its engines in its own slot table and
    discards those of dead pools the next time it builds one.
    """

    _threads = threading.local()
    _keys = itertools.count()

    def __init__(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        self._modules = dict(modules)
        self._data = data
        self._key = next(self._keys)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> EnginePool:
        """A pool over a bundle's Rego modules and merged data."""
        return cls(bundle.modules, bundle.data)

    def engine(self) -> Engine:
        """This thread's engine, built now if it has none (PolicyCompileError on bad policy)."""
        slots: dict[int, tuple[weakref.ref[EnginePool], Engine]] = self._threads.__dict__
        try:
            return slots[self._key][1]
        except KeyError:
            for key, (pool, _) in list(slots.items()):
                if pool() is None:
                    del slots[key]
            engine = Engine(self._modules, self._data)
            slots[self._key] = (weakref.ref(self), engine)
            return engine

    def evaluate(self, query: str, input: Mapping[str, Any]) -> Any:
        """Evaluate on this thread's engine (see `Engine.evaluate`)."""
        return self.engine().evaluate(query, input)
