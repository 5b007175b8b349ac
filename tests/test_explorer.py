"""The explorer against the real demo database: API calls with gradio_client, then a headless Chromium
(Debian's, driven by Playwright) doing what a person does. Screenshots go to test-artifacts/."""

import csv
import io
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from explorer.app import build_app, launch

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db, ratings):
    port = _free_port()
    app = launch(db, port=port, ratings_db=ratings, prevent_thread_lock=True, quiet=True)
    return app, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(demo_db, demo_eval, tmp_path_factory):
    ratings = tmp_path_factory.mktemp("ratings") / "ratings.duckdb"
    app, url = _serve(demo_db, ratings)
    yield app, url, ratings
    app.close()
    app.explorer.close()  # later tests write to the demo database


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[1], verbose=False)


@pytest.fixture(scope="module")
def tone_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("upload") / "tone.wav"
    t = np.arange(32_000) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
    return path


def open_feature(client, target: str) -> tuple[tuple, tuple]:
    """The Feature page as a browser gets it: its head, then its figures."""
    return client.predict(target, api_name="/open_feature"), client.predict(target, api_name="/feature_figures")


def test_search_finds_concepts_by_word(server, client):
    concepts = server[0].explorer.concepts().set_index(["run_id", "feature"])
    lowest = float(np.floor(concepts["ms"].min()))  # the slider's minimum: every concept passes
    result = client.predict("all runs", "any domain", lowest, "speech", False, api_name="/search")
    text = (concepts["name"].fillna("") + " " + concepts["description"].fillna("")).str.lower()
    hits = {(r["run"], int(r["feature"])) for r in (dict(zip(result["headers"], row)) for row in result["data"])}
    assert hits and hits == {k for k, t in text.items() if "speech" in t}


def test_opening_a_feature_returns_its_page(server, client):
    app = server[0]
    concepts = app.explorer.concepts()
    first = concepts.iloc[0]
    head, figures = open_feature(client, f"{first['run_id']}:{int(first['feature'])}")
    header = head[2]
    assert f"#{int(first['feature'])}" in header and "monosemanticity" in header
    # its figures: a plot per shown clip, the mean patch, the histogram and the neighbours
    cards = [o for o in head[3:] if o]  # per slot: the clip's card with its player (empty for an empty slot)
    assert all("<audio" in card for card in cards)
    assert sum(f is not None for f in figures[:8]) == len(cards) > 0
    row = app.explorer.feature(first["run_id"], int(first["feature"]))
    assert figures[9] is not None and len(figures[11]["data"]) == len(row["neighbours"]) > 0
    # its best matches in the other layers' runs, by co-activation over the corpus's clips
    others = pd.DataFrame(figures[10]["data"], columns=figures[10]["headers"])
    assert set(others["run"]) == set(app.explorer.runs()["run_id"]) - {first["run_id"]}
    assert others["cosine"].between(0, 1.0001).all()


def test_audio_is_served_only_for_known_clips(server):
    app, url, _ = server
    known = app.explorer.safe_path(next(iter(app.explorer.clip_paths())))
    with urllib.request.urlopen(f"{url}gradio_api/file={known}") as resp:
        audio, rate = sf.read(io.BytesIO(resp.read()))
    assert rate == 16_000 and len(audio) > 0
    with pytest.raises(PermissionError):
        app.explorer.safe_path("/etc/passwd")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}gradio_api/file=/etc/passwd")
    assert err.value.code in (403, 404)


def test_analyze_api_ranks_features_of_an_upload(server, client, tone_file):
    from gradio_client import handle_file

    run = server[0].explorer.runs()["run_id"].iloc[-1]
    explorer = server[0].explorer
    table, _ = client.predict(run, handle_file(str(tone_file)), api_name="/analyze")
    r = [row[2] for row in table["data"]]
    assert len(r) > 0 and r == sorted(r, reverse=True)
    # every active feature says something: its name, or what its representative clips are
    named = set(explorer.concepts().query("run_id == @run")["feature"])
    rows = {int(row[0]): row[1] for row in table["data"]}
    unnamed = [f for f in rows if f not in named]
    assert unnamed, "the tone should wake some feature outside the top C"
    with explorer.read() as con:
        for f in unnamed:
            labels = con.execute("""SELECT coalesce(nullif(c.label, ''), c.domain) FROM representatives r
                                    JOIN clips c USING (clip_id) WHERE r.run_id = ? AND r.feature = ?
                                    AND r.method = 'sae' AND r.kind = 'H'""", [run, f]).fetchall()
            top = max({lab for (lab,) in labels}, key=[lab for (lab,) in labels].count)
            assert rows[f].startswith("[top clips] ") and f"{top} " in rows[f] and f"/{len(labels)}" in rows[f]
    # and opens its Feature page
    head, _ = open_feature(client, f"{run}:{unnamed[0]}")
    assert f"#{unnamed[0]}" in head[2]


def test_missing_database_page_says_what_to_run(tmp_path):
    app = build_app(tmp_path / "none.duckdb")
    assert "none.duckdb" in app.explorer.problem()
    html = [b for b in app.blocks.values() if getattr(b, "elem_id", None) == "status"][0].value
    assert "ard run configs/demo.toml" in html and "none.duckdb" in html


def _steerable_feature(explorer) -> str:
    """A Steer-tab feature whose clamp to the slider's maximum changes the default clip's transcript
    (found through the same backend the tab calls, so the browser check does not depend on which
    feature happens to be first in this build of the demo)."""
    from pipeline import store
    from pipeline.audio import read_audio
    from pipeline.steering import FeatureEdit, steered_transcripts
    from explorer.views.steer import STRENGTH, clip_choices, default_clip, feature_choices

    run = explorer.runs()["run_id"].iloc[-1]
    model, sae, layer = explorer.model(run), explorer.sae(run), explorer.runs()["layer"].iloc[-1]
    with explorer.read() as con:
        path = store.clip(con, default_clip(clip_choices(explorer)))["path"]
    audio = read_audio(path, 16_000)
    before = model.transcribe(audio)
    for label, feature in feature_choices(explorer, run)[:20]:
        value = round(max(1.0, STRENGTH * explorer.feature(run, int(feature))["max_act"]), 1)
        if steered_transcripts(model, sae, layer, [audio], [FeatureEdit(int(feature), value)])[0] != before:
            return label
    raise AssertionError("no feature among the first 20 changes the default clip's transcript")


@pytest.mark.slow
def test_browser_walkthrough(server, tone_file):
    from playwright.sync_api import expect, sync_playwright

    app, url, ratings = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(120_000)
        expect.set_options(timeout=120_000)  # the first Analyze / Steer call loads the model
        page.goto(url)

        # Concepts: search, then open the first hit
        page.locator("#concept-search textarea").fill("speech")
        page.locator("#concept-search textarea").press("Enter")
        time.sleep(2)
        first_name = page.locator("#concepts-table").get_by_role("gridcell").filter(has_text="speech").first
        expect(first_name).to_be_visible()
        # every column fits the window, and sorting by MS (the header's menu) reorders the rows
        heads = page.locator("#concepts-table thead th")
        boxes = [heads.nth(i).bounding_box() for i in range(heads.count())]
        from explorer.views.concepts import COLUMNS

        ms = COLUMNS.index("MS")
        assert len(boxes) == len(COLUMNS) and max(box["x"] + box["width"] for box in boxes) <= 1300
        heads.nth(ms).hover()
        heads.nth(ms).get_by_role("button", name="Open cell menu").click()
        page.get_by_role("menuitem", name="Sort ascending").first.click()
        rows = page.locator("#concepts-table [role=row]")
        time.sleep(1)
        shown = [rows.nth(i).get_by_role("gridcell").all_inner_texts() for i in (1, 2, 3)]
        assert [float(r[ms]) for r in shown] == sorted(float(r[ms]) for r in shown)
        page.screenshot(path=ARTIFACTS / "1-concepts.png")
        rows.nth(1).get_by_role("gridcell").nth(1).click()  # the row as shown opens, not the row it was before sorting
        expect(page.locator("#feature-title")).to_contain_text(f"#{shown[0][0]}")
        page.locator("#neighbours-table").get_by_role("gridcell").first.wait_for()  # the figures follow the head
        expect(page.locator(".clip-evidence").first).to_contain_text("fires most at")  # frame-level evidence
        page.screenshot(path=ARTIFACTS / "2-feature.png", full_page=True)

        # nothing piles up in the browser: Gradio's run history (every event's outputs in localStorage, rewritten
        # on each event) is off; with it, each feature opened added ~120 KB and slowed the next paint
        assert page.evaluate("() => JSON.stringify(localStorage).length") < 5_000

        # a clip's player has a source that returns audio bytes (fetched when played)
        src = page.locator("audio.clip-audio").first.get_attribute("src")
        audio, rate = sf.read(io.BytesIO(page.request.get(urllib.parse.urljoin(page.url, src)).body()))
        assert rate == 16_000 and len(audio) > 0

        # Map: click a point, the feature opens
        page.get_by_role("tab", name="Map").click()
        page.locator("#map-plot .scatterlayer .point").first.wait_for()
        page.screenshot(path=ARTIFACTS / "3-map.png")
        before = page.locator("#feature-title").inner_text()
        page.locator("#map-plot .scatterlayer .point").nth(5).click(force=True)
        expect(page.locator("#feature-title")).not_to_have_text(before)

        # Analyze: upload a file and see features
        page.get_by_role("tab", name="Analyze").click()
        page.locator("#analyze-audio input[type=file]").set_input_files(str(tone_file))
        time.sleep(2)
        page.locator("#analyze-go").click()
        expect(page.locator("#analyze-table").get_by_role("gridcell").first).to_be_visible()
        page.screenshot(path=ARTIFACTS / "4-analyze.png", full_page=True)

        # Steer: move the slider and see the output change
        page.get_by_role("tab", name="Steer").click()
        label = _steerable_feature(app.explorer)
        picker = page.locator("#steer-feature input")
        picker.click()
        picker.fill(label)
        page.get_by_role("option", name=label).first.click()
        time.sleep(2)  # the slider range follows the feature
        slider = page.locator("#steer-value input[type=range]")
        slider.wait_for()
        slider.fill(str(slider.get_attribute("max")))
        slider.dispatch_event("pointerup")
        slider.dispatch_event("change")
        expect(page.locator("#steer-before textarea")).not_to_have_value("")
        expect(page.locator("#steer-after textarea")).not_to_have_value("")
        assert page.locator("#steer-after textarea").input_value() != page.locator("#steer-before textarea").input_value()
        page.screenshot(path=ARTIFACTS / "5-steer.png", full_page=True)

        # Rate: a concept, save, export, and check the file's rows
        page.get_by_role("tab", name="Rate").click()
        page.locator("#rate-rater textarea, #rate-rater input").first.fill("tester")
        page.locator("#rate-next").click()
        expect(page.locator("#rate-status")).to_contain_text("Concept 1")
        expect(page.locator("#rate-name")).to_be_hidden()  # blind: no name before the rater's own label
        page.locator("#rate-save").click()  # a blind rating without a label is refused
        expect(page.get_by_text("before you see or rate the name").first).to_be_visible()
        page.get_by_role("button", name="Reveal the generated name").click()
        expect(page.locator("#rate-name")).to_be_hidden()
        page.locator("#rate-label textarea, #rate-label input").first.fill("people talking")
        page.get_by_role("button", name="Reveal the generated name").click()
        expect(page.locator("#rate-name")).to_contain_text("Generated name")
        page.locator("#rate-save").click()
        expect(page.locator("#rate-summary")).to_contain_text("1 ratings")
        page.locator("#rate-export-csv").click()
        link = page.locator("#rate-file a").first
        link.wait_for()
        with page.expect_download() as info:
            link.click()
        rows = list(csv.DictReader(open(info.value.path())))
        page.screenshot(path=ARTIFACTS / "6-rate.png", full_page=True)

        # Evaluation: the report's tables and figures
        page.get_by_role("tab", name="Evaluation").click()
        expect(page.locator("#eval-report")).to_contain_text("Table 1: interpretability")
        expect(page.locator("#eval-report table").first).to_contain_text("labels oracle")
        page.locator("#eval-ablation .js-plotly-plot").wait_for()
        page.locator("#eval-table1-seeds .js-plotly-plot").wait_for()  # Table 1 over SAE seeds, drawn
        page.screenshot(path=ARTIFACTS / "7-evaluation.png", full_page=True)
        browser.close()
    assert len(rows) == 1 and rows[0]["rater"] == "tester" and rows[0]["own_label"] == "people talking"
    import duckdb

    with duckdb.connect(str(ratings), read_only=True) as con:  # the ratings database holds ratings only
        assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["ratings"]
    assert rows[0]["sae_hash"] and rows[0]["layer"].startswith("encoder.")


@pytest.mark.slow
def test_concurrent_steer_requests_each_get_their_own_output(server, client):
    """Two users steering at once (and a third sweeping, on another listener that runs in parallel) each
    get the output of their own edit, as when they ask alone."""
    from explorer.views.steer import STRENGTH, clip_choices, default_clip

    explorer = server[0].explorer
    run = explorer.runs()["run_id"].iloc[-1]
    feature = _steerable_feature(explorer).split()[0].lstrip("#")
    top = round(max(1.0, STRENGTH * explorer.feature(run, int(feature))["max_act"]), 1)
    clip = default_clip(clip_choices(explorer))
    ask = lambda v: (run, feature, v, "clamp", True, clip, None, "music")  # noqa: E731
    alone_top, alone_zero = client.predict(*ask(top), api_name="/steer"), client.predict(*ask(0), api_name="/steer")
    assert alone_top[1] != alone_zero[1] and alone_zero[0] == alone_top[0]
    assert alone_top[3].startswith('log p("music")') and alone_top[3] != alone_zero[3]  # the probe words moved
    jobs = [client.submit(*ask(top), api_name="/steer"), client.submit(run, feature, "clamp", True, clip, None, api_name="/sweep"),
            client.submit(*ask(0), api_name="/steer"), client.submit(*ask(top), api_name="/steer")]
    got = [job.result(timeout=600) for job in jobs]
    seen = lambda out: (out[0], out[1], out[3])  # noqa: E731  before, after, probe-word shift
    assert [seen(g) for g in (got[0], got[2], got[3])] == [seen(alone_top), seen(alone_zero), seen(alone_top)]


def test_a_request_holds_the_model_alone(server):
    import threading

    explorer = server[0].explorer
    run = explorer.runs()["run_id"].iloc[-1]
    inside, release, order = threading.Event(), threading.Event(), []

    def first():
        with explorer.using_model(run):
            inside.set()
            release.wait(10)
            order.append("first out")

    def second():
        inside.wait(10)
        with explorer.using_model(run):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    threads[1].join(0.5)
    assert threads[1].is_alive() and order == []  # the second request waits while the first holds the model
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first out", "second in"]


def test_background_status_says_what_is_left_and_what_failed():
    from explorer.background import Background

    gate, ran = threading.Event(), []
    work = Background([("run a", lambda: gate.wait(5) and ran.append("a")), ("names", lambda: 1 / 0),
                       ("the evaluation", lambda: ran.append("e"))]).start()
    time.sleep(0.2)
    assert "now run a; then names, the evaluation" in work.status() and work.running and work.version == 0
    gate.set()
    work.join(5)
    # the failing step stops the work (what landed stays), and the page says where and why
    assert ran == ["a"] and not work.running and work.pending() == ["the evaluation"]
    assert "stopped</b> at names: ZeroDivisionError" in work.status()
    assert Background([]).start().status() == ""


def _copy_database(source: Path, target: Path) -> None:
    """Copy a DuckDB file through DuckDB, not the file system: recent commits may sit in its write-ahead log (an
    explorer killed before it closed the file), and an earlier test's explorer may still hold it, read-only or
    read-write, which rules out a connection of the other kind in this process (and so a CHECKPOINT)."""
    import duckdb

    for read_only in (True, False):
        try:
            con = duckdb.connect(str(source), read_only=read_only)
        except duckdb.ConnectionException:
            continue
        try:
            con.execute(f"ATTACH '{target}' AS copy (READ_WRITE)")
            con.execute(f"COPY FROM DATABASE {source.stem} TO copy")
            con.execute("DETACH copy")
        finally:
            con.close()
        return
    raise AssertionError(f"{source}: no connection of either kind could open it")


@pytest.mark.slow
def test_tabs_fill_in_as_background_work_lands(demo_db, demo_eval, tmp_path):
    """`make demo` opens the explorer after one run and finishes the rest in a background thread of the same
    process: here a copy of the demo database with one run and the evaluation held back, landed by real
    writes from a background thread while a browser watches the page."""
    import duckdb
    from playwright.sync_api import expect, sync_playwright

    from explorer.background import Background
    from pipeline import store

    db = tmp_path / "ard.duckdb"
    _copy_database(demo_db, db)
    with duckdb.connect(str(db)) as con:
        held = store.runs(con)["run_id"].iloc[0]
        tables = [t for (t,) in con.execute("SELECT DISTINCT table_name FROM information_schema.columns "
                                            "WHERE column_name = 'run_id' AND table_name NOT LIKE 'eval_%'").fetchall()]
        saved = {t: con.execute(f"SELECT * FROM {t} WHERE run_id = ?", [held]).df() for t in tables}
        evaluation = store.read_evaluation(con)
        for t in tables:
            con.execute(f"DELETE FROM {t} WHERE run_id = ?", [held])
        for name in evaluation:
            con.execute(f"DROP TABLE {store.EVAL_PREFIX}{name}")
    # `ard steer-eval`'s sweep lands with it (made by hand: the real one is slow; its own test is in test_steering)
    evaluation["steering_sweep"] = pd.DataFrame(
        [{"split": split, "layer": layer, "method": method, "strength": strength, "fp": fp, "fp_text": 1.0, "wer": wer,
          "no_speech_speech": 0.1, "no_speech_other": 0.8, "chosen": method == "scale"}
         for split, layer, method, strength, fp, wer in [("tuning", "", "none", 0.0, 0.8, 0.2),
                                                         ("held_out", "", "none", 0.0, 0.6, 0.25),
                                                         ("tuning", "encoder.3", "scale", 3.0, 0.5, 0.21),
                                                         ("held_out", "encoder.3", "scale", 3.0, 0.3, 0.26)]])
    gate = threading.Event()

    def land_run():
        gate.wait(300)
        with store.connect(db) as con:
            for table, frame in saved.items():
                con.register("_f", frame)
                con.execute(f"INSERT INTO {table} SELECT * FROM _f")
                con.unregister("_f")

    def land_evaluation():
        with store.connect(db) as con:
            store.write_evaluation(con, evaluation)

    work = Background([(f"run {held}", land_run), ("the evaluation", land_evaluation)]).start()
    port = _free_port()
    app = launch(db, port=port, ratings_db=tmp_path / "ratings.duckdb", background=work,
                 prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            expect.set_options(timeout=120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator("#background-status")).to_contain_text(f"now run {held}; then the evaluation")
            assert page.locator("#concepts-table").get_by_text(held).count() == 0
            page.get_by_role("tab", name="Steer").click()
            expect(page.locator("#steer-hallucination")).to_contain_text("not measured yet")
            assert not page.locator("#steer-hallucination-plot").is_visible()
            page.get_by_role("tab", name="Evaluation").click()
            expect(page.locator("#eval-report")).to_contain_text("No evaluation in this database yet")
            gate.set()
            expect(page.locator("#eval-report")).to_contain_text("Table 1: interpretability")
            page.locator("#eval-ablation .js-plotly-plot").wait_for()
            expect(page.locator("#background-status")).not_to_contain_text("Still computing")
            expect(page.locator("#eval-report")).to_contain_text("false positives 0.600 -> 0.300")
            page.get_by_role("tab", name="Steer").click()  # the steering trade-off, drawn as the report draws it
            expect(page.locator("#steer-hallucination")).to_contain_text("false positives 0.60 → 0.30, WER 0.250 → 0.260")
            page.locator("#steer-hallucination-plot .js-plotly-plot").wait_for()
            page.get_by_role("tab", name="Concepts").click()  # the run is a choice now, and its concepts show
            page.locator("#concepts-run input").click()
            page.get_by_role("option", name=held).click()
            expect(page.locator("#concepts-table [role=row]").nth(1)).to_contain_text(held)
            page.screenshot(path=ARTIFACTS / "8-filled-in.png", full_page=True)
            browser.close()
    finally:
        gate.set()
        app.close()
        app.explorer.close()
    assert work.failed is None and work.pending() == []


def test_label_cohesion_by_hand():
    from explorer.plots import label_cohesion

    # a, a at distance 1; b, b at distance 1; the a's and the b's 3 or sqrt(10) apart
    frame = pd.DataFrame({"label": ["a", "a", "b", "b"], "hx": [0, 1, 0, 1], "hy": [0, 0, 3, 3],
                          "x": [0, 0, 0, 0], "y": [0, 1, 2, 3]})
    all_pairs = (1 + 1 + 3 + 3 + 2 * np.sqrt(10)) / 6
    assert label_cohesion(frame, "what it hears") == pytest.approx(1 / all_pairs)
    assert label_cohesion(frame, "decoder direction") == pytest.approx(1 / ((1 + 2 + 3 + 1 + 2 + 1) / 6))


def test_map_lays_out_what_features_hear_and_rings_the_open_feature(server):
    from explorer import plots
    from explorer.views.map import draw

    explorer = server[0].explorer
    run = explorer.runs()["run_id"].iloc[-1]
    frame = explorer.feature_map(run)
    with explorer.read() as con:
        heard = {f for (f,) in con.execute("SELECT DISTINCT feature FROM representatives WHERE run_id = ? AND "
                                            "method = 'sae' AND kind = 'H'", [run]).fetchall()}
    assert set(frame.loc[frame["hx"].notna(), "feature"]) == heard  # placed iff it has H clips
    # features that hear the same kind of sound sit together there, far more than by decoder direction
    by_sound, by_decoder = plots.label_cohesion(frame, "what it hears"), plots.label_cohesion(frame, "decoder direction")
    assert by_sound < 0.75 and by_sound < by_decoder - 0.1
    # the open feature is the star, its decoder neighbours are ringed, each group has its own colour
    selected = int(explorer.concepts().query("run_id == @run")["feature"].iloc[0])
    fig = draw(explorer, run, "H label", "what it hears", f"{run}:{selected}")
    traces = {t["name"]: t for t in fig.data}
    assert traces["open feature"]["customdata"].tolist() == [selected]
    near = set(explorer.feature(run, selected)["neighbours"]["neighbour"])
    assert set(traces["decoder neighbours"]["customdata"].tolist()) == near
    colours = [t["marker"]["color"] for t in fig.data if t["name"] not in ("open feature", "decoder neighbours")]
    assert len(colours) == len(set(colours)) == plots.TOP_LABELS + 1  # the top labels and "other"


@pytest.mark.slow
def test_live_microphone_updates_features_while_it_listens(server, demo_rows, tmp_path):
    """Chromium's fake microphone plays demo speech; the Analyze tab's live view lists features and keeps
    updating as chunks arrive."""
    from playwright.sync_api import expect, sync_playwright

    speech = [r for r in demo_rows if r["source"] == "espeak-ng"][:3]
    heard = np.concatenate([sf.read(ROOT / "data" / "demo" / r["file_name"])[0] for r in speech])
    fake = tmp_path / "mic.wav"
    sf.write(fake, heard.astype(np.float32), 16_000, subtype="PCM_16")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake}"])
        page = browser.new_context(viewport={"width": 1300, "height": 1000}, permissions=["microphone"]).new_page()
        expect.set_options(timeout=120_000)
        page.goto(server[1])
        page.get_by_role("tab", name="Analyze").click()
        page.get_by_text("Live: stream from the microphone").click()
        page.locator("#analyze-live").get_by_role("button", name="Record").click()
        status = page.locator("#analyze-live-status")
        expect(status).to_contain_text("s heard")
        expect(page.locator("#analyze-table").get_by_role("gridcell").first).to_be_visible()
        first = status.inner_text()
        expect(status).not_to_have_text(first)  # the next chunk came in and was analysed
        rows = page.locator("#analyze-table [role=row]").count()
        page.screenshot(path=ARTIFACTS / "9-live.png", full_page=True)
        browser.close()
    assert rows > 5


def test_make_demo_leaves_to_the_background_exactly_what_is_not_current(demo_db, demo_eval, demo_config):
    """After a full build and evaluation (this session's), a second `make demo` has nothing left for the
    background; with a run's names or the evaluation's stamp gone, exactly that step is scheduled."""
    import json
    import sys

    sys.path.insert(0, str(ROOT))
    from app import background_steps, demo_runs

    assert background_steps(demo_config, None) == []
    log = demo_config.work_dir / "stages.json"
    saved = log.read_text()
    first, second = demo_runs(demo_config)[:2]
    try:
        done = json.loads(saved)
        del done[f"name:{first}"], done[f"atlas:{second}"], done["evaluate"]
        log.write_text(json.dumps(done))
        assert [label for label, _ in background_steps(demo_config, None)] == [
            f"names of {first}", f"run {second}", "the evaluation (report and Evaluation tab)"]
    finally:
        log.write_text(saved)


@pytest.mark.slow
def test_make_demo_opens_on_a_preview_of_the_first_run_that_the_full_run_replaces(demo_db, demo_config, tmp_path):
    """On a machine where the first run's SAE is not trained yet, `make demo` builds a cheap preview of it (a
    300-step SAE, MFCC embeddings), opens on that, and leaves the full run to the background, which rebuilds
    it because the preview's stage keys are not the full config's. Here in a copy of the demo's work folder
    with its activations (extraction is the same for both) and a database of its own."""
    import dataclasses
    import json
    import shutil
    import sys

    import duckdb

    sys.path.insert(0, str(ROOT))
    import app
    from pipeline.stages import stage_keys, status

    work = tmp_path / "work"
    shutil.copytree(demo_config.work_dir / "activations", work / "activations")
    extract = json.loads((demo_config.work_dir / "stages.json").read_text())["extract"]
    (work / "stages.json").write_text(json.dumps({"extract": extract}))
    cfg = dataclasses.replace(demo_config, extract=dataclasses.replace(demo_config.extract, work_dir=str(work)),
                              store=dataclasses.replace(demo_config.store, db=str(tmp_path / "ard.duckdb")))
    first, *others = app.demo_runs(cfg)
    scheduled = []
    original, app.background_steps = app.background_steps, lambda c, m: scheduled.append(c) or []
    try:
        assert app.build_demo_database(cfg) is None  # (the background's steps are looked at below)
    finally:
        app.background_steps = original
    with duckdb.connect(str(cfg.db_path), read_only=True) as con:
        runs = con.execute("SELECT run_id, embedder FROM runs").fetchall()
        n_features = con.execute("SELECT count(*) FROM features WHERE run_id = ?", [first]).fetchone()[0]
    assert runs == [(first, "mfcc")] and n_features == cfg.sae.expansions[0] * 384
    log = json.loads((work / "sae" / first / "train_log.jsonl").read_text().splitlines()[-1])
    assert log["step"] == app.PREVIEW_STEPS - 1
    current = dict(status(cfg))
    assert current["extract"] and not any(current[f"{s}:{first}"] for s in ("train", "score", "store", "atlas"))
    preview = stage_keys(app.preview_config(cfg))
    assert preview["extract"] == stage_keys(cfg)["extract"]
    assert [label for label, _ in original(cfg, None)][:2] == [f"the full run {first} (replaces the preview)",
                                                               f"run {others[0]}"]


def test_whole_run_reads_are_cached_until_the_database_moves_on(tmp_path):
    """Every concept and a run's map are read once per version of the database (at the paper's scale they
    take longer than a request may); a write landed by the background work is seen once its version moves."""
    from explorer.state import Explorer
    from pipeline import store

    db = tmp_path / "v.duckdb"
    with store.connect(db) as con:
        store._insert(con, "runs", pd.DataFrame({"run_id": ["a"], "layer": ["L1"], "expansion": [8]}))
        store._insert(con, "features", pd.DataFrame({"run_id": "a", "feature": [0, 1], "ms": [1.0, 2.0],
                                                     "selected": [True, False]}))
    version = [0]
    explorer = Explorer(db, shared=True, version=lambda: version[0])
    try:
        first = explorer.concepts()
        assert first["feature"].tolist() == [0]
        with store.connect(db) as con:  # the background thread's write, through the same database instance
            con.execute("UPDATE features SET selected = true WHERE feature = 1")
        assert explorer.concepts() is first  # not read again: nothing said it moved
        version[0] += 1
        assert explorer.concepts()["feature"].tolist() == [1, 0]
    finally:
        explorer.close()


def test_figures_send_arrays_as_plotly_typed_arrays_that_decode_to_the_same_values():
    """What the browser's plotly.js decodes (dtype, base64 bytes, shape "rows, cols") is the array itself."""
    import base64
    import json

    from explorer import plots

    patch = np.random.default_rng(0).normal(size=(30, 40)).astype(np.float32)
    heat = json.loads(plots.mel_patch(patch).to_json())["data"][0]
    z = np.frombuffer(base64.b64decode(heat["z"]["bdata"]), np.float32).reshape(
        [int(n) for n in heat["z"]["shape"].split(",")])
    assert heat["z"]["dtype"] == "f4" and (z == patch.T).all()  # mel bands down, frames across
    hist = json.loads(plots.histogram((0.0, 3.0, np.array([2, 0, 1]))).to_json())["data"][0]
    assert np.frombuffer(base64.b64decode(hist["x"]["bdata"]), np.float64).tolist() == [0.5, 1.5, 2.5]
    with pytest.raises(TypeError, match="give plots arrays"):
        plots.Figure([{"x": pd.Series([1])}], {}).to_json()


def test_a_clip_figure_draws_its_mel_and_the_activation_where_they_are():
    """The SVG of a clip: its image is the mel's 256 levels (loud dark, low bands at the bottom), its line peaks
    where the activation does, both across the same time axis."""
    import base64
    import re

    from PIL import Image

    from explorer import plots
    from pipeline import store

    mel = np.random.default_rng(0).normal(size=(30, 40)).astype(np.float32)  # frames x bands
    values = np.zeros(30, np.float32)
    values[7], values[20] = 2.0, 1.0
    svg = plots.mel_with_activation(mel, values, "H1 <b>")
    png = base64.b64decode(re.search(r"href='data:image/png;base64,([^']+)'", svg).group(1))
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (40, 30) and (image == 255 - store.levels(mel.T)[2][::-1]).all()
    points = np.array([p.split(",") for p in re.search(r"points='([^']+)'", svg).group(1).split()], float)
    box = plots.MEL_SVG
    width = box["width"] - box["left"] - box["right"]
    assert len(points) == 30 and np.allclose(np.diff(points[:, 0]), width / 30, atol=0.11)
    top, bottom = box["top"], box["height"] - box["bottom"]
    assert points[:, 1].argmin() == 7 and points[7, 1] == pytest.approx(bottom - 0.95 * (bottom - top), abs=0.06)
    assert points[20, 1] == pytest.approx(bottom - 0.95 * (bottom - top) / 2, abs=0.06) and points[0, 1] == bottom
    assert "H1 &lt;b&gt;" in svg and "<b>" not in svg and "act 2.00" in svg


def test_the_concepts_table_sends_at_most_its_cap_and_says_how_many_there_are(server, client):
    from explorer.views import concepts

    many = pd.DataFrame({"feature": np.arange(concepts.MAX_ROWS + 500)})
    assert f"first {concepts.MAX_ROWS:,} of {len(many):,} concepts" in concepts.count(many)
    assert concepts.count(many.head(3)) == "3 concepts"
    # the search API answers with the table itself (its count is drawn apart, for the page)
    shown = client.predict("all runs", "any domain", 0.0, "", False, api_name="/search")
    assert set(shown) == {"headers", "data", "metadata"} and shown["headers"] == concepts.COLUMNS
    assert len(shown["data"]) == min(len(server[0].explorer.concepts()), concepts.MAX_ROWS)
    # "fires on": the word under the firing frames of most of a speech feature's top clips, as its page shows them
    rows = [dict(zip(shown["headers"], r)) for r in shown["data"]]
    said = [r for r in rows if r["fires on"]]
    assert said, "no speech feature of the demo fires on a word its top clips share"
    word, share = said[0]["fires on"].rsplit(" ", 1)
    n, total = map(int, share.split("/"))
    head = server[0].explorer.feature_head(said[0]["run"], int(said[0]["feature"]))
    on_page = [{re.sub(r"[^\w'-]", "", w[0].lower()) for w in sorted(e["words"], key=lambda w: -w[3])[:3] if w[3] >= 0.2}
               for e in head["evidence"].values()]
    assert 2 <= n <= total == len(on_page) and sum(word in words for words in on_page) == n
