"""The review app without a browser: no jax on import, the review state (versions, conflicts,
files changed behind its back, bad lines), the report's rendering, the command line."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import review_run

from scicot_jax.review import cli
from scicot_jax.review.render import fmt, markdown, transpose
from scicot_jax.review.rundir import OutsideRun, RunDir, inside
from scicot_jax.review.state import Conflict, ReviewState
from scicot_jax.teacher.review import ReviewError, apply_review, export

ROOT = Path(__file__).resolve().parents[1]


def test_the_app_imports_no_jax_and_starts_in_about_a_second(tmp_path):
    """What `serve` imports before it prints its URL: no jax, flax or tensorflow. Costs are
    CPU seconds (wall time on a loaded CI machine says little): ~0.5 s to import, ~1 s from
    the interpreter's start to the printed URL."""
    code = (
        "import json, resource, sys; "
        "cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); t = cpu(); "
        "import scicot_jax.review.app, scicot_jax.review.cli, scicot_jax.review.report; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax', 'tensorflow', "
        "'torch', 'matplotlib', 'seqio'}); print(json.dumps([cpu() - t, heavy]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    cpu, heavy = json.loads(out.stdout)
    assert heavy == []
    assert cpu < 2.0, cpu
    run = review_run.build(tmp_path)
    before = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools/review.py"), "serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("scicot-review: serving")
        url = proc.stdout.readline()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    started = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - before
    assert started < 3.0, started  # interpreter + imports + bind + a clean stop


@pytest.fixture
def store(tmp_path):
    return review_run.build(tmp_path) / review_run.STORE


def test_state_starts_from_the_file_export_writes(store, tmp_path):
    st = ReviewState(store)
    assert st.path == store / "review.jsonl"
    export(store, tmp_path / "cli.jsonl")
    assert st.path.read_bytes() == (tmp_path / "cli.jsonl").read_bytes()
    assert st.progress() == {"total": 20, "reviewed": 0, "keep": 16, "drop": 4, "edit": 0}


def test_decisions_versions_and_conflicts(store):
    st = ReviewState(store)
    key = st.items[0].key
    assert st.decide(key, "drop", None, 0).version == 1
    with pytest.raises(Conflict) as c:
        st.decide(key, "keep", None, 0)  # made on the old version
    assert c.value.item.row["decision"] == "drop" and c.value.item.version == 1
    item = st.decide(key, "edit", "By hand. Therefore, the answer is B.", 1)
    assert (item.row["decision"], item.version) == ("edit", 2)
    back = st.decide(key, "keep", "ignored text", 2)  # keep restores the teacher's text
    assert back.row["rationale"] == st.items[0].original
    for bad, text in (("maybe", None), ("edit", "  ")):
        with pytest.raises(ValueError):
            st.decide(key, bad, text, 3)
    with pytest.raises(KeyError):
        st.decide(("nope", 0), "drop", None, 0)
    again = ReviewState(store)  # a restart reads versions and decisions back
    assert again.items[0].row == st.items[0].row and again.progress()["reviewed"] == 1


def test_a_file_changed_behind_its_back_is_read_again(store):
    st = ReviewState(store)
    key = st.items[1].key
    rows = [json.loads(line) for line in st.path.read_text().splitlines()]
    rows[1].update(decision="drop", version=5)  # a text editor, or a second server
    st.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(Conflict) as c:
        st.decide(key, "keep", None, 0)
    assert c.value.item.version == 5
    assert st.decide(key, "keep", None, 5).version == 6


def test_a_bad_review_file_is_named_by_line(store):
    (store / "review.jsonl").write_text('{"example_id": "x", "sample_index": 0}\n')
    with pytest.raises(ReviewError, match=r"review.jsonl:1: field 'decision'"):
        ReviewState(store)


def test_apply_names_and_matches_apply_review(store, tmp_path):
    st = ReviewState(store)
    st.decide(st.items[2].key, "edit", "Clean. Therefore, the answer is A.", 0)
    for bad in ("", "../up", "a/b", ".hidden", "x" * 101):
        with pytest.raises(ValueError, match="run name"):
            st.apply(bad)
    res = st.apply("clean")
    assert res["edit"] == 1 and res["out_dir"] == str(store.parent / "clean")
    cli_res = apply_review(store, st.path, tmp_path / "cli")
    assert {k: v for k, v in res.items() if k != "out_dir"} == {
        k: v for k, v in cli_res.items() if k != "out_dir"
    }
    assert (store.parent / "clean/records.jsonl").read_bytes() == (
        tmp_path / "cli/records.jsonl"
    ).read_bytes()
    with pytest.raises(FileExistsError):
        st.apply("clean")


def test_paths_resolve_inside_the_run_or_are_refused(tmp_path):
    (tmp_path / "run" / "a").mkdir(parents=True)
    (tmp_path / "run" / "out").symlink_to(tmp_path)
    assert inside(tmp_path / "run", "a") == (tmp_path / "run" / "a").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", "out/secret", "", "a\x00b"):
        with pytest.raises(OutsideRun):
            inside(tmp_path / "run", bad)


def test_report_tables_show_every_key_and_escape_markdown():
    cols, rows, folded = transpose(
        {
            "m1": {"steps": 3, "stages": {"stage1": {"flops": 1.5e9}}, "none": None},
            "m2": {"new_field": True, "big": {str(i): i for i in range(12)}},
        }
    )
    assert cols == ["m1", "m2"]
    assert rows == [
        ("steps", ["3", ""]),
        ("stages.stage1.flops", ["1.5e+09", ""]),
        ("new_field", ["", "yes"]),
    ]  # 'none' is empty everywhere: left out
    assert folded[0][0] == "big" and len(folded[0][1]) == 12
    assert (fmt(25.0), fmt(12.5), fmt(1234567), fmt(0.00012), fmt(132472897536)) == (
        "25.0",
        "12.5",
        "1,234,567",
        "0.00012",
        "1.32e+11",
    )
    html = markdown("# T\n\n| a | b |\n|---|---:|\n| <script> | `x` |\n\ntext <b>")
    assert "<script>" not in html and "&lt;script&gt;" in html and "<code>x</code>" in html
    assert "<table>" in html and "text &lt;b&gt;" in html


def test_rundir_finds_the_pipeline_layout(tmp_path):
    run = RunDir(review_run.build(tmp_path))
    assert [run.rel(s) for s in run.stores()] == [
        review_run.STORE,
        "select_scicot-morsd_d2/store",
    ]
    store = run.stores()[0]
    assert [s.name for s in run.selections_of(store)] == ["select_scicot-morsd_d2"]
    assert [run.rel(p) for p in run.plots()] == ["plots/accuracy_by_method.png"]
    assert len(run.metrics_files()) == 2 and len(run.predictions()) == 2


def test_cli_report_and_errors(tmp_path, capsys):
    run = review_run.build(tmp_path)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    assert html.count("<svg") == 4 and "data:image/png;base64," in html
    assert "stages.student.train_flops" in html  # per-stage rows, shown without code for them
    assert "&lt;script&gt;" not in html  # no rationale here
    assert cli.main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: not a directory" in err


def _get(app, path: str, headers: dict | None = None) -> tuple[int, str]:
    """One request to the app on a loopback port, in process (aiohttp's test server)."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    async def go() -> tuple[int, str]:
        async with TestClient(TestServer(app.build(), host="127.0.0.1")) as client:
            r = await client.get(path, headers=headers or {})
            return r.status, await r.text()

    return asyncio.run(go())


def test_bad_lines_are_named_and_foreign_hosts_refused(tmp_path, capsys):
    from scicot_jax.review.app import ReviewApp

    run = review_run.build(tmp_path)
    app = ReviewApp(run, token="t0k")
    assert _get(app, "/report?token=t0k")[0] == 200
    status, text = _get(app, "/report?token=t0k", {"Host": "evil.example:80"})
    assert status == 403 and "Host" in text  # DNS rebinding: a page of another name
    metrics = run / "train_baseline/train/metrics.jsonl"
    metrics.write_text(metrics.read_text() + "{not json\n")
    status, text = _get(app, "/report?token=t0k")
    assert status == 400 and f"{metrics}:7: invalid JSON" in text
    assert cli.main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    assert f"{metrics}:7: invalid JSON" in capsys.readouterr().err
    decisions = run / "select_scicot-morsd_d2/decisions.jsonl"
    decisions.write_text("[1, 2\n")
    status, text = _get(app, f"/rationales?token=t0k&store={review_run.STORE}")
    assert status == 400 and f"{decisions}:1: invalid JSON" in text


def test_line_chart_scales_and_escapes():
    from scicot_jax.review.svg import line_chart

    svg = line_chart({"loss": [(1, 4.0), (2, 2.0), (3, float("nan"))]}, "loss <vs> step")
    assert svg.count("<circle") == 2 and "loss &lt;vs&gt; step" in svg  # NaN left out
    flat = line_chart({"accuracy": [(1, 0.0)]}, "one point")
    assert ">-0.5<" in flat and ">0.5<" in flat  # a band around a single zero
    assert "no finite values" in line_chart({"x": [(1, float("inf"))]}, "empty")


def test_rationales_view_filters_sorts_and_pages(store, monkeypatch):
    from scicot_jax.review import rationales

    run = RunDir(store.parents[1])
    st = ReviewState(store)
    verdicts = rationales.selection_verdicts(run, store)
    monkeypatch.setattr(rationales, "PER_PAGE", 7)
    v = rationales.view(st, verdicts, rationales.Query(page=3))
    assert (v["pages"], v["page"], len(v["cards"]), v["first"]) == (3, 3, 6, 15)
    assert rationales.view(st, verdicts, rationales.Query(page=99))["page"] == 3
    st.decide(st.items[0].key, "edit", "Mine. Therefore, the answer is C.", 0)
    for show, n in (
        ("edited", 1),
        ("reviewed", 1),
        ("undecided", 19),
        ("wrong", 4),
        ("selection kept", 10),
        ("selection dropped", 10),
    ):
        assert rationales.view(st, verdicts, rationales.Query(show=show))["matching"] == n
    # the search sees the teacher's text of an edited record too
    original = st.items[0].original.split(".")[0]
    assert rationales.view(st, verdicts, rationales.Query(q=original.upper()))["matching"] >= 1
    monkeypatch.setattr(rationales, "PER_PAGE", 50)
    rds = [c["rd"] for c in rationales.view(st, verdicts, rationales.Query(sort="rd"))["cards"]]
    scored = [r for r in rds if r is not None]
    assert scored == sorted(scored) and rds[len(scored) :] == [None] * (len(rds) - len(scored))
    q = rationales.Query.parse({"show": "bogus", "sort": "x", "page": "-4", "q": "a" * 500})
    assert (q.show, q.sort, q.page, len(q.q)) == ("all", "order", 1, 200)


def test_records_a_live_teacher_run_adds_join_the_review(store):
    from scicot_jax.data.store import RationaleRecord, RationaleStore

    st = ReviewState(store)
    st.decide(st.items[0].key, "drop", None, 0)
    writer = RationaleStore.open(store)
    ex = writer.examples()[0]
    writer.append(
        RationaleRecord(
            ex.id,
            7,
            "Late. Therefore, the answer is Z.",
            "Z",
            False,
            "teacher:oracle",
            "zero_shot_cot",
            0.7,
        )
    )
    writer.close()
    st.refresh()
    assert len(st.items) == 21 and st.items[-1].row["decision"] == "drop"
    assert st.items[0].row["decision"] == "drop" and st.items[0].version == 1  # kept
    rows = [json.loads(line) for line in st.path.read_text().splitlines()]
    assert len(rows) == 21 and rows[-1]["sample_index"] == 7
    kept = sum(r["decision"] != "drop" for r in rows)
    assert st.apply("with-late")["records"] == kept  # apply-review accepts the file as it is
