"""The review app in a real browser: headless Debian Chromium (/usr/bin/chromium, installed by
.ci/run) driven by Playwright, against `tools/review.py serve` running as its own process.

Without Chromium these tests FAIL (they do not skip). Screenshots go under each test's tmp dir
and are copied to /tmp/review_shots/ to look at."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import review_run

from scicot_jax.teacher.review import _read_decisions, apply_review

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("SCICOT_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path("/tmp/review_shots")
SAVED = re.compile(r"saved (keep|drop|edit) · version \d+")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (each test opens its own context)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install it with `apt-get install -y chromium chromium-driver` "
            "(.ci/run does)"
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # a loaded 2-core CI: generous, still bounded
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


class Server:
    """`tools/review.py serve RUN_DIR --port 0` as a child process."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tools/review.py"),
                "serve",
                str(self.run_dir),
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("http://"):
                self.url = line.strip()
                break
        else:
            raise AssertionError(f"the server exited with {self.proc.wait()} before its URL")
        self.base, self.token = self.url.split("/?token=")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def run(tmp_path):
    return review_run.build(tmp_path)


@pytest.fixture
def server(run):
    srv = Server(run)
    yield srv
    srv.stop()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def rationales_url(server: Server, **params: str) -> str:
    from urllib.parse import urlencode

    return f"{server.base}/rationales?" + urlencode(
        {"token": server.token, "store": review_run.STORE, **params}
    )


def review_rows(run: Path) -> dict[tuple[str, int], dict]:
    path = run / review_run.STORE / "review.jsonl"
    _read_decisions(path)  # what apply-review will read: every line valid
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["example_id"], r["sample_index"]): r for r in rows}


def card_key(card) -> tuple[str, int]:
    return (card.get_attribute("data-eid"), int(card.get_attribute("data-sidx")))


def wait_saved(card) -> None:
    from playwright.sync_api import expect

    expect(card.locator(".status")).to_have_text(SAVED)


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS / name)
    return path


def test_token_is_required(page, server):
    for url in (server.base + "/", server.base + "/report", f"{server.base}/?token=wrong"):
        resp = page.goto(url)
        assert resp.status == 403 and "token" in page.content()
    resp = page.goto(server.url)
    assert resp.status == 200 and str(server.run_dir.resolve()) in page.inner_text("main")
    # the token became a cookie for this server: links without it work in this browser
    assert page.goto(server.base + "/report").status == 200
    # an action needs the header too: the cookie alone (what another site could make the
    # browser send) is refused
    r = page.request.post(server.base + "/api/decide", data={"store": review_run.STORE})
    assert r.status == 403


def test_filter_search_and_sort(page, server, run):
    from playwright.sync_api import expect

    page.goto(rationales_url(server))
    rows = review_rows(run)  # the server wrote the review file as `export` would
    wrong = [k for k, r in rows.items() if r["correct"] is not True]
    expect(page.locator("#progress")).to_contain_text(f"0 of {len(rows)} reviewed")
    page.select_option("#show", "wrong")  # submits the filter form
    expect(page.locator("#matching")).to_have_text(f"{len(wrong)} matching")
    cards = page.locator("article.card")
    assert sorted(card_key(c) for c in cards.all()) == sorted(wrong)
    assert cards.locator(".badge.bad").count() == len(wrong)

    with page.expect_navigation():
        page.select_option("#show", "all")
    with page.expect_navigation():
        page.select_option("#sort", "rd")
    rds = [c.get_attribute("data-rd") for c in page.locator("article.card").all()]
    scored = [float(x) for x in rds if x]
    assert len(scored) >= 10 and scored == sorted(scored)
    assert rds[len(scored) :] == [""] * (len(rds) - len(scored))  # unscored ones last
    with page.expect_navigation():
        page.select_option("#sort", "rd_desc")
    scored = [float(x) for x in (c.get_attribute("data-rd") for c in cards.all()) if x]
    assert scored == sorted(scored, reverse=True)

    page.fill("#search", "window.__xss")
    page.press("#search", "Enter")
    expect(page.locator("#matching")).to_have_text("1 matching")


def test_keyboard_decisions_are_saved_and_survive_a_reload(page, server, run, tmp_path):
    from playwright.sync_api import expect

    page.goto(rationales_url(server))
    cards = page.locator("article.card")
    first, second, third = cards.nth(0), cards.nth(1), cards.nth(2)
    page.keyboard.press("j")  # to the second card
    expect(second).to_have_class(re.compile("current"))
    page.keyboard.press("d")  # drop it; focus moves on
    wait_saved(second)
    expect(third).to_have_class(re.compile("current"))
    page.keyboard.press("k")
    page.keyboard.press("k")
    expect(first).to_have_class(re.compile("current"))
    page.keyboard.press("a")  # keep
    wait_saved(first)
    page.keyboard.press("j")  # the third card: edit it
    expect(third).to_have_class(re.compile("current"))
    page.keyboard.press("e")
    box = third.locator("textarea")
    expect(box).to_be_focused()
    box.fill("Edited by hand: 1 + 1 = 2. Therefore, the answer is B.")
    page.keyboard.press("Control+Enter")
    wait_saved(third)
    expect(page.locator("#progress")).to_contain_text("3 of 20 reviewed")
    shot(page, tmp_path, "rationales.png")

    rows = review_rows(run)
    want = {
        card_key(first): ("keep", 1),
        card_key(second): ("drop", 1),
        card_key(third): ("edit", 1),
    }
    for key, (decision, version) in want.items():
        assert (rows[key]["decision"], rows[key]["version"]) == (decision, version)
    assert rows[card_key(third)]["rationale"].startswith("Edited by hand")

    page.reload()
    cards = page.locator("article.card")
    for i, (decision, _) in enumerate(want[card_key(cards.nth(i))] for i in range(3)):
        expect(cards.nth(i)).to_have_attribute("data-decision", decision)
        expect(cards.nth(i).locator(".reviewed-mark")).to_have_text("reviewed")
    expect(cards.nth(2).locator(".rationale")).to_contain_text("Edited by hand")
    expect(page.locator("#progress")).to_contain_text("3 of 20 reviewed")
    fourth = cards.nth(3)  # two quick clicks on one card: two versions, no conflict
    fourth.evaluate(  # in one tick: the second is sent before the first is answered
        "c => { c.querySelector('[data-act=keep]').click();"
        " c.querySelector('[data-act=drop]').click(); }"
    )
    expect(fourth.locator(".status")).to_have_text("saved drop · version 2")
    expect(fourth.locator(".conflict")).to_be_hidden()
    assert review_rows(run)[card_key(fourth)]["version"] == 2
    page.keyboard.press("/")
    expect(page.locator("#search")).to_be_focused()
    page.keyboard.type("d")  # typed into the search box: no decision
    page.wait_for_timeout(500)  # a decision would be on disk by now (~30 ms)
    assert sum(r.get("version", 0) > 0 for r in review_rows(run).values()) == 4
    expect(page.locator("#search")).to_have_value("d")


def test_second_tab_gets_a_conflict_and_nothing_is_lost(browser, server, run, tmp_path):
    from playwright.sync_api import expect

    ctx = browser.new_context()
    a, b = ctx.new_page(), ctx.new_page()
    for pg in (a, b):
        pg.goto(rationales_url(server))
    card_a, card_b = a.locator("article.card").first, b.locator("article.card").first
    key = card_key(card_a)
    a.keyboard.press("d")
    wait_saved(card_a)
    b.bring_to_front()
    b.keyboard.press("e")  # tab B still shows version 0
    card_b.locator("textarea").fill("Tab B's careful edit. Therefore, the answer is C.")
    b.keyboard.press("Control+Enter")
    conflict = card_b.locator(".conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("changed in another tab")
    expect(conflict).to_contain_text("now drop, version 1")
    expect(card_b.locator("textarea")).to_have_value(re.compile("Tab B's careful edit"))
    shot(b, tmp_path, "rationales_conflict.png")
    assert (review_rows(run)[key]["decision"], review_rows(run)[key]["version"]) == ("drop", 1)
    card_b.locator("button.mine").click()  # B chooses to write over A, knowingly
    wait_saved(card_b)
    row = review_rows(run)[key]
    assert (row["decision"], row["version"]) == ("edit", 2)
    assert row["rationale"].startswith("Tab B's careful edit")
    # tab A is stale now: its next decision on the record is refused as well
    a.bring_to_front()
    a.locator("article.card").first.locator("button[data-act=keep]").click()
    expect(card_a.locator(".conflict")).to_contain_text("now edit, version 2")
    assert review_rows(run)[key]["decision"] == "edit"
    ctx.close()


def test_kill_9_mid_review_keeps_every_acknowledged_decision(browser, run):
    from playwright.sync_api import expect

    srv = Server(run)
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.goto(rationales_url(srv))
    cards = pg.locator("article.card")
    for i in range(12):  # a burst: no waiting for answers between keys
        pg.keyboard.press("d" if i % 2 else "a")
    # the 4th acknowledged card (a selector, not a JS string: the page's CSP refuses eval, which
    # wait_for_function needs once its first check comes back false)
    pg.locator(".status").filter(has_text=re.compile(r"^saved")).nth(3).wait_for()
    srv.kill9()
    acked = {}
    for i in range(12):
        text = cards.nth(i).locator(".status").inner_text()
        if text.startswith("saved"):
            acked[card_key(cards.nth(i))] = text.split()[1]
    assert len(acked) >= 4
    rows = review_rows(run)  # every line valid after the kill
    for key, decision in acked.items():
        assert rows[key]["decision"] == decision and rows[key]["version"] == 1

    srv2 = Server(run)
    try:
        pg.goto(rationales_url(srv2))
        for i in range(12):
            c = pg.locator("article.card").nth(i)
            if card_key(c) in acked:
                expect(c).to_have_attribute("data-decision", acked[card_key(c)])
        reviewed = sum(r.get("version", 0) > 0 for r in review_rows(run).values())
        expect(pg.locator("#progress")).to_contain_text(f"{reviewed} of 20 reviewed")
        assert reviewed >= len(acked)
    finally:
        srv2.stop()
        ctx.close()


def test_apply_writes_the_run_apply_review_would(page, server, run, tmp_path):
    from playwright.sync_api import expect

    page.goto(rationales_url(server))
    page.keyboard.press("d")
    wait_saved(page.locator("article.card").nth(0))
    page.keyboard.press("e")
    page.locator("article.card").nth(1).locator("textarea").fill(
        "Short and clean. Therefore, the answer is A."
    )
    page.keyboard.press("Control+Enter")
    wait_saved(page.locator("article.card").nth(1))
    page.fill("#apply-name", "clean-ui")
    page.click("#apply")
    out = page.locator("#apply-result")
    expect(out).to_contain_text("Wrote run")
    store = run / review_run.STORE
    ui = store.parent / "clean-ui"
    assert str(ui) in out.inner_text()
    review = tmp_path / "review-copy.jsonl"
    shutil.copyfile(store / "review.jsonl", review)
    cli = apply_review(store, review, tmp_path / "clean-cli")
    assert out.inner_text().count(f"{cli['records']} records") == 1
    assert (ui / "records.jsonl").read_bytes() == (
        tmp_path / "clean-cli/records.jsonl"
    ).read_bytes()
    assert (ui / "examples.jsonl").read_bytes() == (store / "examples.jsonl").read_bytes()
    skip = ("created", "review_file")
    m_ui, m_cli = (
        {k: v for k, v in json.loads((d / "manifest.json").read_text()).items() if k not in skip}
        for d in (ui, tmp_path / "clean-cli")
    )
    decisions = [r["decision"] for r in review_rows(run).values()]
    counts = {d: decisions.count(d) for d in ("keep", "drop", "edit")}
    assert m_ui == m_cli and m_ui["review"] == {**counts, "unreviewed": 0}
    assert counts["edit"] == 1 and cli["records"] == counts["keep"] + 1
    page.click("#apply")  # the same name again: refused, the first run untouched
    expect(out).to_contain_text("already exists")
    assert (ui / "records.jsonl").read_bytes() == (
        tmp_path / "clean-cli/records.jsonl"
    ).read_bytes()


def test_hostile_rationale_is_shown_as_text(page, server, tmp_path):
    page.goto(rationales_url(server, q="window.__xss"))
    card = page.locator("article.card").first
    text = card.locator(".rationale").inner_text()
    assert text.startswith('<script>window.__xss = 1</script><b id="bold">not bold</b><img')
    assert "&amp; done." in text and text.count("A very long line of reasoning") == 400
    assert page.evaluate("window.__xss") is None  # neither the script nor onerror ran
    assert page.locator("#bold").count() == 0 and card.locator("img").count() == 0
    box = card.bounding_box()
    assert box["width"] <= 1200 and card.locator(".rationale").bounding_box()["height"] < 600
    shot(page, tmp_path, "rationales_hostile.png")


def test_paths_outside_the_run_dir_are_refused(page, server, run, tmp_path):
    (tmp_path / "secret.txt").write_text("not for the browser")
    os.symlink(tmp_path, run / "link_out")
    page.goto(server.url)
    ok = page.goto(server.base + "/file/plots/accuracy_by_method.png")
    assert ok.status == 200 and ok.headers["content-type"] == "image/png"
    for bad in (
        "/file/..%2Fsecret.txt",
        "/file/..%2F..%2F..%2Fetc%2Fpasswd",
        "/file/%2Fetc%2Fpasswd",
        "/file/link_out/secret.txt",
        "/rationales?store=..%2F..",
        "/rationales?store=%2Fetc",
    ):
        r = page.request.get(server.base + bad)
        assert r.status == 403, bad
        assert "not for the browser" not in r.text() and "root:" not in r.text()
    # a client that does not normalize the path (browsers do): literal dot segments
    conn = http.client.HTTPConnection(server.base.removeprefix("http://"))
    for bad in ("/file/../secret.txt", "/file/../../../../etc/passwd", "/file/plots/../../x"):
        conn.request("GET", bad, headers={"X-Review-Token": server.token})
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 403 and "outside the run directory" in body, (bad, r.status, body)


def test_report_page_and_the_static_report(page, server, run, tmp_path):
    from playwright.sync_api import expect

    page.goto(f"{server.base}/report?token={server.token}")
    shot(page, tmp_path, "report_top.png")
    acc = page.locator("#accuracy")
    expect(acc).to_contain_text("scicot+morsd:2")
    expect(acc.locator("tbody tr")).to_have_count(2)
    fields = page.locator("#method-fields")
    for row in ("train_flops", "stages.student.train_flops", "stages.stage2.steps"):
        expect(fields.locator("th", has_text=row).first).to_be_visible()
    expect(page.locator("#teacher-fields")).to_contain_text("output_tokens")
    expect(page.locator("svg.chart")).to_have_count(4)  # loss and accuracy, two stages
    img = page.locator(".plots img").first
    expect(img).to_be_visible()
    assert page.evaluate("document.querySelector('.plots img').naturalWidth") == 60
    rows = page.locator("#preds tbody tr")
    assert rows.first.get_attribute("data-correct") == "no"  # wrong answers first
    page.select_option("#f-method", "baseline")
    page.check("#f-wrong")
    shown = [r for r in rows.all() if r.is_visible()]
    assert shown and all(
        r.get_attribute("data-method") == "baseline" and r.get_attribute("data-correct") == "no"
        for r in shown
    )
    expect(page.locator(".selection table").first).to_contain_text("duplicate")
    shot(page, tmp_path, "report.png")

    out = tmp_path / "report.html"
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools/review.py"), "report", str(run), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    assert "data:image/png;base64," in html and 'src="/' not in html and 'href="/' not in html
    static = page.context.new_page()
    requests = []
    static.on("request", lambda r: requests.append(r.url))
    static.goto(out.as_uri())
    assert static.evaluate("document.querySelector('.plots img').naturalWidth") == 60
    expect(static.locator("svg.chart")).to_have_count(4)
    static.select_option("#f-method", "scicot-morsd_d2")
    expect(static.locator("#f-count")).to_contain_text("6 of 12 shown")
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    static.set_viewport_size({"width": 1200, "height": 900})
    shot(static, tmp_path, "report_static.png")
