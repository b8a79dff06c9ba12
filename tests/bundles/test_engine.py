"""The regorus engine wrapper: compile errors, JSON results, thread affinity, fallbacks, Rego tests."""

from __future__ import annotations

import gc
import json
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ig_gate.bundles.engine import Engine, EnginePool, run_rego_tests
from ig_gate.bundles.errors import PolicyCompileError, PolicyEvalError

SETS = """package t

reasons contains "zeta" if input.z
reasons contains "alpha" if input.a

doc := {"reasons": reasons, "nested": [{"s": {3, 1, 2}}], "n": input.n}

maybe if input.flag == true
"""


def run_on_thread(fn: Callable[[], Any]) -> Any:
    """Run fn on a fresh thread; return its result or the BaseException it raised."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # the test inspects whatever was raised
            box.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "worker thread did not finish"
    return box[0]


@pytest.fixture
def unraisable() -> Iterator[list[str]]:
    """Collect unraisable-exception reports (regorus reports objects dropped on the wrong thread this way)."""
    seen: list[str] = []
    gc.collect()  # garbage of earlier tests is not this test's business
    previous = sys.unraisablehook
    sys.unraisablehook = lambda report: seen.append(str(report.exc_value))
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("package bad\n\nr := \n", "bad/one.rego:4:1"),
        ("package bad\n\nr if {\n  x := }\n", "bad/one.rego:4:"),
        ("package bad\n\nr := no_such_function(1)\n", "bad/one.rego:3:"),
    ],
    ids=["syntax", "unclosed-body", "unknown-function"],
)
def test_compile_error_names_file_and_line(source: str, where: str) -> None:
    with pytest.raises(PolicyCompileError) as caught:
        Engine({"ok.rego": "package ok\nx := 1\n", "bad/one.rego": source}, {})
    message = str(caught.value)
    assert where in message
    assert "Stack backtrace" not in message and "\n" not in message


def test_compiled_result_is_json_friendly_with_sorted_sets() -> None:
    engine = Engine({"t.rego": SETS}, {})
    assert engine.compiled, engine.compiled_reason
    result = engine.evaluate("data.t.doc", {"z": True, "a": True, "n": 1.5})
    assert result == {"reasons": ["alpha", "zeta"], "nested": [{"s": [1, 2, 3]}], "n": 1.5}
    assert json.loads(json.dumps(result)) == result


def test_interpreted_result_is_json_friendly_with_sorted_sets() -> None:
    engine = Engine({"t.rego": SETS}, {}, use_vm=False)
    assert not engine.compiled
    result = engine.evaluate("data.t.doc", {"z": True, "a": True, "n": 1.5})
    assert result == {"reasons": ["alpha", "zeta"], "nested": [{"s": [1, 2, 3]}], "n": 1.5}
    package = engine.evaluate("data.t", {"a": True, "n": 0})
    assert package["reasons"] == ["alpha"] and isinstance(package["doc"]["nested"][0]["s"], list)


@pytest.mark.parametrize("use_vm", [True, False], ids=["compiled", "interpreter"])
def test_undefined_is_none(use_vm: bool) -> None:
    engine = Engine({"t.rego": SETS}, {}, use_vm=use_vm)
    assert engine.evaluate("data.t.maybe", {"flag": False}) is None
    assert engine.evaluate("data.t.maybe", {"flag": True}) is True


def test_bracketed_rule_query_runs_compiled() -> None:
    engine = Engine({"p.rego": "package ig.policies\n\ndefault admin := false\n\nadmin if input.ok\n"}, {})
    assert "data.ig.policies.admin" in engine.entry_points
    assert engine.evaluate('data.ig.policies["admin"]', {"ok": True}) is True
    assert engine.evaluate('data.ig.policies["admin"]', {}) is False


def test_engine_used_from_another_thread_raises_policy_eval_error_not_a_panic() -> None:
    engine = Engine({"t.rego": SETS}, {})
    outcome = run_on_thread(lambda: engine.evaluate("data.t.doc", {}))
    assert isinstance(outcome, PolicyEvalError), type(outcome).__mro__
    assert "panicked" in str(outcome) and "per thread" in str(outcome)
    cause = outcome.__cause__
    assert cause is not None and not isinstance(cause, Exception)  # the original was pyo3's PanicException
    assert engine.evaluate("data.t.maybe", {"flag": True}) is True  # still fine on its own thread


def test_interpreter_used_from_another_thread_is_converted_too() -> None:
    engine = Engine({"t.rego": SETS}, {}, use_vm=False)
    outcome = run_on_thread(lambda: engine.evaluate("data.t", {}))
    assert isinstance(outcome, PolicyEvalError)


def test_pool_builds_one_engine_per_thread_on_that_thread() -> None:
    pool = EnginePool({"t.rego": SETS}, {})
    here = pool.engine()
    assert pool.engine() is here
    # compare on the worker: an engine must not be handed back to (and dropped on) this thread
    assert run_on_thread(lambda: pool.engine() is pool.engine() and pool.engine() is not here) is True
    assert run_on_thread(lambda: pool.evaluate("data.t.doc", {"a": True, "n": 0})["reasons"]) == ["alpha"]


def test_pool_concurrent_threads_get_correct_answers() -> None:
    pool = EnginePool({"t.rego": SETS}, {})
    barrier = threading.Barrier(4)
    results: dict[int, list[Any]] = {}

    def worker(n: int) -> None:
        barrier.wait(timeout=10)
        results[n] = [pool.evaluate("data.t.doc", {"n": n * 1000 + i})["n"] for i in range(200)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert {n: values for n, values in results.items()} == {
        n: [n * 1000 + i for i in range(200)] for n in range(4)
    }


def test_dropping_a_pool_never_drops_another_threads_engine(unraisable: list[str]) -> None:
    built, release = threading.Event(), threading.Event()
    pool: EnginePool | None = EnginePool({"t.rego": SETS}, {})
    successor = EnginePool({"t.rego": SETS}, {})

    def worker() -> None:
        assert pool is not None
        pool.evaluate("data.t.doc", {})
        built.set()
        release.wait(timeout=10)
        successor.evaluate("data.t.doc", {})  # building the next engine sweeps the dead pool's one, here

    thread = threading.Thread(target=worker)
    thread.start()
    assert built.wait(timeout=10)
    pool = None
    gc.collect()
    release.set()
    thread.join(timeout=10)
    gc.collect()
    assert unraisable == []


def test_local_assignment_falls_back_to_the_interpreter_with_rego_semantics() -> None:
    # regorus 0.13's VM says true here; Rego says undefined (the assignment of an undefined value fails).
    engine = Engine({"g.rego": "package g\n\nr if {\n\tx := input.missing\n\ttrue\n}\n"}, {})
    assert not engine.compiled
    assert "g.rego:4 body-local" in engine.compiled_reason
    assert engine.evaluate("data.g.r", {}) is None


def test_partial_object_rule_falls_back_and_conflicts_are_errors() -> None:
    # regorus 0.13's VM returns {"x": 2} here (last wins); Rego reports the conflict.
    source = 'package o\n\nm[k] := 1 if some k in ["x"]\n\nm[k] := 2 if some k in input.keys\n'
    engine = Engine({"o.rego": source}, {})
    assert not engine.compiled and "o.rego:3 partial object rule" in engine.compiled_reason
    assert engine.evaluate("data.o.m", {"keys": []}) == {"x": 1}
    with pytest.raises(PolicyEvalError, match="conflict"):
        engine.evaluate("data.o.m", {"keys": ["x"]})


def test_compiler_limitation_falls_back_to_the_interpreter() -> None:
    engine = Engine({"p.rego": 'package p\n\nnamed["read_profile"] := true if input.ok\n'}, {})
    assert not engine.compiled
    assert "compiler limitation" in engine.compiled_reason and "p.rego:3" in engine.compiled_reason
    assert engine.evaluate('data.p.named["read_profile"]', {"ok": True}) is True
    assert engine.evaluate("data.p.named.read_profile", {}) is None


def test_non_identifier_rule_keys_are_evaluated_by_the_interpreter() -> None:
    engine = Engine({"p.rego": 'package p\n\nnamed["read-profile"] := true if input.ok\n\nz := 1\n'}, {})
    assert engine.compiled and engine.entry_points == {"data.p.z"}
    assert engine.evaluate('data.p.named["read-profile"]', {"ok": True}) is True


def test_conflicting_complete_rule_never_yields_a_value() -> None:
    modules = {"c.rego": "package c\n\nr := 1 if input.a\n\nr := 2 if input.b\n"}
    compiled, interpreted = Engine(modules, {}), Engine(modules, {}, use_vm=False)
    assert compiled.compiled
    assert compiled.evaluate("data.c.r", {"a": True}) == interpreted.evaluate("data.c.r", {"a": True}) == 1
    assert compiled.evaluate("data.c.r", {"a": True, "b": True}) is None  # the VM: undefined (fails closed)
    with pytest.raises(PolicyEvalError, match=r"data\.c\.r.*conflicts"):
        interpreted.evaluate("data.c.r", {"a": True, "b": True})


@pytest.mark.parametrize("bad_input", [{"x": {1, 2}}, {"x": {1: "integer key"}}], ids=["set", "int-key"])
def test_non_json_input_raises_policy_eval_error(bad_input: dict[str, Any]) -> None:
    with pytest.raises(PolicyEvalError):
        Engine({"t.rego": SETS}, {}).evaluate("data.t.doc", bad_input)


def test_data_is_visible_to_both_paths() -> None:
    modules = {"d.rego": "package d\n\nallowed if input.country in data.tenants[input.tenant].countries\n"}
    data = {"tenants": {"acme": {"countries": ["US"]}}}
    for use_vm in (True, False):
        engine = Engine(modules, data, use_vm=use_vm)
        assert engine.evaluate("data.d.allowed", {"tenant": "acme", "country": "US"}) is True
        assert engine.evaluate("data.d.allowed", {"tenant": "acme", "country": "FR"}) is None


def test_run_rego_tests_reports_pass_fail_and_error() -> None:
    modules = {
        "m.rego": "package m\n\ndouble(x) := x * 2\n",
        "m_test.rego": (
            "package m_test\n\nimport data.m\n\n"
            "test_passes if m.double(2) == 4 with input as {}\n\n"
            "test_fails if m.double(2) == 5\n\n"
            'test_errors if { x := [1, 2]; x[0] == to_number("nope") }\n'
        ),
    }
    results = {result.name.rsplit(".", 1)[-1]: result for result in run_rego_tests(modules, {})}
    assert set(results) == {"test_passes", "test_fails", "test_errors"}
    assert results["test_passes"].passed and results["test_passes"].error is None
    assert not results["test_fails"].passed and "expected true" in (results["test_fails"].error or "")
    assert not results["test_errors"].passed and "m_test.rego" in (results["test_errors"].error or "")
    assert all(result.file == "m_test.rego" for result in results.values())
