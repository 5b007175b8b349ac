"""`ard export atlas`: the static concept atlas, opened from a file:// URL in headless Chromium with no server:
the list loads, search filters it, a feature page opens and its clips play."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def atlas(demo_db, demo_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("share") / "atlas"
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "atlas", str(demo_config.path),
                          str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    return out, run.stdout


@pytest.mark.slow
def test_atlas_opens_from_disk_searches_and_plays(atlas, demo_db):
    from playwright.sync_api import expect, sync_playwright

    from explorer.state import Explorer
    from test_explorer import CHROMIUM, CHROMIUM_ARGS

    out, printed = atlas
    concepts = Explorer(demo_db).concepts()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert f"{len(concepts)} features" in printed and size < 60 * 2**20  # tens of MB, not GB
    assert len(list((out / "features").rglob("*.html"))) == len(concepts)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + ["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((out / "index.html").as_uri())
        rows = page.locator("#concepts tbody tr")
        expect(rows).to_have_count(len(concepts))
        expect(page.locator("#maps svg circle").first).to_be_attached()
        named = concepts.dropna(subset=["name"])
        term = named["name"].iloc[0].split()[0]
        page.locator("#search").fill(term)
        want = sum(term.lower() in f"{n} {d}".lower() for n, d in zip(concepts["name"].fillna(""),
                                                                       concepts["description"].fillna("")))
        expect(rows).to_have_count(want)
        assert 0 < want < len(concepts)
        page.screenshot(path=ARTIFACTS / "atlas-index.png")
        rows.first.locator("a").click()
        expect(page.locator("#feature-title")).to_contain_text("#")
        audio = page.locator("audio").first
        duration = audio.evaluate("""a => new Promise((ok, fail) => {
            a.addEventListener('error', () => fail('cannot play ' + a.src));
            a.addEventListener('playing', () => ok(a.duration));
            a.play(); })""")
        assert duration > 0.5
        assert page.locator("svg polyline").count() >= 1  # activation timelines
        page.screenshot(path=ARTIFACTS / "atlas-feature.png", full_page=True)
        # the frame-level evidence travels too: the word a speech feature fires on, in the list and on its page
        template = {"feature", "fires", "most", "words", "there", "sound"}
        said = next(r for r in concepts.dropna(subset=["fires_on"]).itertuples()
                    if len(r.fires_on.split()[0]) >= 4 and r.fires_on.split()[0] not in template)
        word, share = said.fires_on.rsplit(" ", 1)
        page.goto((out / "index.html").as_uri())
        page.locator("#search").fill(said.name)
        expect(page.locator("#concepts tbody")).to_contain_text(said.fires_on)
        page.goto((out / "features" / said.run_id / f"{int(said.feature)}.html").as_uri())
        lines = [t.lower() for t in page.locator(".evidence").all_inner_texts()]
        assert len(lines) == int(share.split("/")[1])  # one line under each H^k clip with evidence
        assert sum(word in t for t in lines) >= int(share.split("/")[0])
        browser.close()
