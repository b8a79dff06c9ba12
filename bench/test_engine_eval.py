"""Cost of one policy decision (data.ig.zt.decision on the example bundle): compiled VM versus interpreter.

Target (issue 2): compiled evaluation <= 20 us median, input encoding and result decoding included.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import regorus

from ig_gate.bundles.archive import Bundle, build_bundle
from ig_gate.bundles.engine import Engine, EnginePool

POLICIES = Path(__file__).resolve().parents[1] / "policies"
DECISION = "data.ig.zt.decision"
INPUT: dict[str, Any] = {
    "tenant": "acme",
    "session": {"risk": "low", "acr": "pwd", "auth_age_s": 120, "subject": "alice"},
    "stepup": False,
    "device": {"posture": "managed"},
    "geo": {"country": "US", "anomaly": False},
    "request": {"method": "POST", "path": "/graphql", "operation_type": "query"},
}
ALLOW = {"allow": True, "stepup": False, "deny": False, "reasons": []}


@pytest.fixture(scope="module")
def example() -> Bundle:
    return build_bundle(POLICIES)


def test_compiled_decision(benchmark, example: Bundle) -> None:
    engine = Engine.from_bundle(example)
    assert engine.compiled, engine.compiled_reason
    assert benchmark(engine.evaluate, DECISION, INPUT) == ALLOW


def test_compiled_decision_varied_inputs(benchmark, example: Bundle) -> None:
    engine = Engine.from_bundle(example)
    cases = itertools.cycle(
        [
            {
                **INPUT,
                "session": {**INPUT["session"], "risk": risk},
                "geo": {"country": country, "anomaly": False},
            }
            for risk in ("low", "medium", "high")
            for country in ("US", "DE", "FR")
        ]
    )
    benchmark(lambda: engine.evaluate(DECISION, next(cases)))


def test_pool_decision(benchmark, example: Bundle) -> None:
    pool = EnginePool.from_bundle(example)
    assert benchmark(pool.evaluate, DECISION, INPUT) == ALLOW


def test_interpreter_decision(benchmark, example: Bundle) -> None:
    engine = Engine(example.modules, example.data, use_vm=False)
    assert benchmark(engine.evaluate, DECISION, INPUT) == ALLOW


def test_raw_vm_execute_only(benchmark, example: Bundle) -> None:
    """Lower bound: the VM alone, input already encoded and result left as JSON text."""
    modules = sorted(
        (path, text) for path, text in example.modules.items() if not path.endswith("_test.rego")
    )
    data = json.dumps(example.data)
    program = regorus.Program.compile_from_modules(data, modules, [DECISION])
    vm = regorus.Rvm()
    vm.load_program(program)
    vm.set_data_json(data)
    encoded = json.dumps(INPUT)

    def run() -> str:
        vm.set_input_json(encoded)
        return vm.execute_entry_point(DECISION)

    assert json.loads(benchmark(run)) == ALLOW


def test_raw_interpreter_eval_rule(benchmark, example: Bundle) -> None:
    """The interpreter's `eval_rule` with a Python dict input, for comparison."""
    interpreter = regorus.Engine()
    for path, text in sorted(example.modules.items()):
        interpreter.add_policy(path, text)
    interpreter.add_data(example.data)

    def run() -> Any:
        interpreter.set_input(INPUT)
        return interpreter.eval_rule(DECISION)

    assert benchmark(run) == ALLOW
