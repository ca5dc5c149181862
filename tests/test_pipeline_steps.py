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


def _writer(calls):
    def work(d):
        calls.append(d.name)
        (d / "sub").mkdir(exist_ok=True)
        (d / "sub" / "predictions.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
        return {"n": len(calls)}

    return work


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / "sub/predictions.jsonl").write_text('{"a": 1}\n'), "predictions.jsonl"),
        (lambda d: (d / "sub/predictions.jsonl").write_text('{"a": 1}\n{"a": 3}\n'), "SHA-256"),
        (lambda d: (d / "sub/predictions.jsonl").unlink(), "predictions.jsonl is missing"),
        (lambda d: (d / "DONE.json").write_text("{garbage"), "DONE.json is damaged"),
        (lambda d: (d / "DONE.json").write_bytes(b"\xff\xfe"), "DONE.json is damaged"),
        (lambda d: (d / "DONE.json").write_text('{"result": 3}'), "DONE.json is damaged"),
    ],
)
def test_damaged_finished_step_runs_again_naming_the_file(tmp_path, damage, named):
    calls, logged = [], []
    work = _writer(calls)
    assert StepRunner(tmp_path, log=logged.append).run("a", work) == {"n": 1}
    damage(tmp_path / "a")
    assert StepRunner(tmp_path, log=logged.append).run("a", work) == {"n": 2}
    redo = [x for x in logged if x.startswith("[redo] a:")]
    assert len(redo) == 1 and named in redo[0], logged
    assert (tmp_path / "a/sub/predictions.jsonl").read_text().count("\n") == 2
    assert StepRunner(tmp_path, log=logged.append).run("a", work) == {"n": 2}  # trusted again


def test_files_added_after_a_step_finished_are_not_its_outputs(tmp_path):
    calls = []
    StepRunner(tmp_path, log=lambda s: None).run("a", _writer(calls))
    (tmp_path / "a/infer").mkdir()
    (tmp_path / "a/infer/later.jsonl").write_text("{}\n")  # e.g. a later step's infer files
    (tmp_path / "a/sub/.writer.lock").write_text("")
    StepRunner(tmp_path, log=lambda s: None).run("a", _writer(calls))
    assert calls == ["a"]


def test_another_pod_process_write_in_flight_is_not_an_output(tmp_path):
    """On a pod every process writes a step's outputs into the same shared directory; the
    temp file of another process's atomic write, there while DONE.json is made and gone after,
    is neither recorded nor missed."""
    in_flight = tmp_path / "a/sub/.predictions.jsonl.1831.d5cab263.tmp"

    def work(d):
        _writer([])(d)
        in_flight.write_text('{"a": 1}\n')  # the other process has not renamed it yet
        return {"n": 1}

    StepRunner(tmp_path, log=lambda s: None).run("a", work)
    assert in_flight.name not in (tmp_path / "a/DONE.json").read_text()
    in_flight.unlink()  # its os.replace lands
    logged = []
    assert StepRunner(tmp_path, log=logged.append).run("a", work) == {"n": 1}
    assert not [x for x in logged if x.startswith("[redo]")], logged
