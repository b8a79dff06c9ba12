"""`ig-gate autoscale simulate --component`: an unknown component is a clear error, not a traceback."""

from __future__ import annotations

from pathlib import Path

from ig_gate.sidecar.cli import main

TRACES = Path(__file__).resolve().parents[2] / "deploy" / "traces"


def test_unknown_component_exits_1_naming_it(tmp_path: Path, capsys) -> None:
    code = main(["autoscale", "simulate", str(TRACES / "spike.csv"), "--config",
                 str(TRACES / "autoscale.yaml"), "--component", "nope", "--plot", str(tmp_path / "x.png")])
    assert code == 1
    assert "--component: 'nope' is not in autoscale.profiles" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
