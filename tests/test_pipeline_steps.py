"""Step runner: finished steps are skipped, crashed ones re-run, changed inputs refused."""

import pytest

from scicot_jax.pipeline.steps import StepInputsChanged, StepRunner


def test_skip_rerun_and_changed_inputs(tmp_path):
    calls = []

    def work(d):
        calls.append(d.name)
        (d / "artifact.txt").write_text("x")
        return {"n": len(calls)}

    r = StepRunner(tmp_path, log=lambda s: None)
    assert r.run("a", work, inputs={"k": 1}) == {"n": 1}
    assert StepRunner(tmp_path, log=lambda s: None).run("a", work, inputs={"k": 1}) == {"n": 1}
    assert calls == ["a"]
    with pytest.raises(StepInputsChanged, match="--redo a"):
        StepRunner(tmp_path, log=lambda s: None).run("a", work, inputs={"k": 2})
    again = StepRunner(tmp_path, log=lambda s: None, redo=("a",))
    assert again.run("a", work, inputs={"k": 2}) == {"n": 2}


def test_crashed_step_runs_again(tmp_path):
    def crash(d):
        (d / "partial").write_text("half")
        raise RuntimeError("boom")

    r = StepRunner(tmp_path, log=lambda s: None)
    with pytest.raises(RuntimeError):
        r.run("b", crash)
    assert not r.is_done("b")
    assert r.run("b", lambda d: {"partial_seen": (d / "partial").exists()}) == {
        "partial_seen": True
    }
    assert r.is_done("b")
