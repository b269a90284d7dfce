"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real server.
Screenshots go to test-artifacts/browser (or $XMODAL_TEST_ARTIFACTS/browser)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from library_helpers import make_photo_tree
from serve_helpers import running_server, shapes_library
from xmodal.library import Library
from xmodal.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("XMODAL_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
KEY = "browser-test-key"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: bash scripts/test.sh installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is a test dependency")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.errors = []  # console errors and uncaught exceptions, checked by the tests
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    folder = ARTIFACTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_page_loads_offline_and_says_what_it_serves(page):
    with running_server(Settings()) as server:
        requested = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server.url + "/")
        status = page.locator("#status")
        status.filter(has_text="machine learning only").wait_for(timeout=10_000)
        assert page.title() == "xmodal"
        assert page.locator("#query").is_disabled()  # no library: nothing to search yet
        assert page.locator("#version").inner_text().startswith("xmodal ")
        screenshot(page, "page-ml-only")
    assert requested and all(url.startswith(server.url) for url in requested), requested
    assert page.errors == []


def test_page_asks_for_the_key_and_signs_in(page):
    with running_server(Settings(api_key=KEY)) as server:
        page.goto(server.url + "/")
        page.locator("#login").wait_for(state="visible", timeout=10_000)
        page.fill("#api-key", "wrong")
        page.click("#login button")
        page.locator("#login-error").filter(has_text="not right").wait_for(timeout=10_000)
        screenshot(page, "page-login-refused")
        page.fill("#api-key", KEY)
        page.click("#login button")
        page.locator("#status").filter(has_text="machine learning only").wait_for(timeout=10_000)
        assert page.locator("#login").is_hidden()
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert cookies["xmodal_api_key"]["httpOnly"] and cookies["xmodal_api_key"]["sameSite"] == "Strict"
        # The cookie also opens the API docs, whose assets are served locally.
        page.goto(server.url + "/docs")
        page.locator(".swagger-ui").get_by_text("/predict", exact=True).first.wait_for(timeout=20_000)
        screenshot(page, "docs")
    # 401s before signing in are answers the page handles, not errors of its own.
    assert all("401" in e or "Unauthorized" in e for e in page.errors), page.errors


# -- searching a library -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    library = shapes_library(tmp_path_factory.mktemp("browser-shapes"))
    yield library
    library.library.close()


@pytest.fixture(scope="module")
def server(shapes):
    with running_server(Settings(), shapes.library) as running:
        yield running


def tile_items(page) -> list[int]:
    return [int(i) for i in page.locator("#results .tile").evaluate_all("tiles => tiles.map(t => t.dataset.item)")]


def wait_first_tile(page, item: int) -> None:
    page.wait_for_function(
        "item => document.querySelector('#results .tile')?.dataset.item === String(item)", arg=item, timeout=15_000
    )


def test_typing_a_query_shows_the_expected_photo_first(page, server, shapes):
    expected = server.client.get("/api/search", params={"q": "a red circle", "k": 48}).json()["hits"]
    assert shapes.shows(expected[0]["path"], "red", "circle")  # the model ranks it first; the page must too
    page.goto(server.url + "/")
    page.locator("#query").wait_for(state="visible")
    page.locator("#status").filter(has_text="Type what you are looking for").wait_for(timeout=10_000)
    page.locator("#query").press_sequentially("a red circle", delay=20)  # instant: no Enter needed
    wait_first_tile(page, expected[0]["item_id"])
    assert tile_items(page) == [h["item_id"] for h in expected]
    first = page.locator("#results .tile").first
    first.hover()
    score = first.locator(".score")
    assert score.inner_text() == f"{expected[0]['score']:.3f}"
    score.evaluate(
        "e => new Promise(done => e.getAnimations().length ? e.getAnimations()[0].finished.then(done) : done())"
    )
    assert score.evaluate("e => getComputedStyle(e).opacity") == "1"  # shown on hover,
    assert page.locator("#results .tile").nth(5).locator(".score").evaluate("e => getComputedStyle(e).opacity") == "0"
    assert f"score {expected[0]['score']:.3f}" in first.get_attribute("title")
    page.wait_for_function(  # the thumbnails in view have loaded (those below load as they scroll in)
        "() => [...document.querySelectorAll('#results .tile img')].slice(0, 12)"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000,
    )
    assert f"{len(expected)} results" in page.locator("#status").inner_text()  # those above the score floor
    assert "?q=a+red+circle" in page.url  # the address keeps the query
    screenshot(page, "search-a-red-circle")
    assert page.errors == []


def test_search_by_uploading_or_dropping_an_image(page, server, shapes):
    photo = sorted(shapes.scenes)[11]
    item = shapes.library.catalog.item_by_path(photo).id
    page.goto(server.url + "/")
    page.locator("#status").filter(has_text="Type what you are looking for").wait_for(timeout=10_000)
    page.set_input_files("#image-file", photo)
    wait_first_tile(page, item)
    assert page.locator("#example-label").inner_text() == Path(photo).name
    screenshot(page, "search-by-upload")
    page.click("#example-clear")
    page.locator("#results .tile").first.wait_for(state="detached", timeout=10_000)
    other = sorted(shapes.scenes)[20]
    transfer = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            return transfer;
        }""",
        [base64.b64encode(Path(other).read_bytes()).decode(), "dropped.jpg"],
    )
    page.dispatch_event("main", "dragenter", {"dataTransfer": transfer})
    assert page.locator("#drop-hint").is_visible()
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})
    wait_first_tile(page, shapes.library.catalog.item_by_path(other).id)
    assert page.locator("#drop-hint").is_hidden() and page.locator("#example-label").inner_text() == "dropped.jpg"
    assert page.errors == []


def test_more_like_this_detail_view_and_keyboard(page, server, shapes):
    page.goto(server.url + "/?q=a+blue+square")
    page.locator("#results .tile").first.wait_for(timeout=15_000)
    items = tile_items(page)
    third = page.locator("#results .tile").nth(2)
    third.hover()
    third.locator(".more").click()
    wait_first_tile(page, items[2])
    assert page.locator("#query").input_value() == "" and f"item={items[2]}" in page.url
    assert page.locator("#example-label").inner_text().startswith("like ")
    screenshot(page, "more-like-this")
    like = tile_items(page)
    # keyboard: / to the box, ↓ into the grid, → along it, Enter opens, → next, M more like this
    page.keyboard.press("Escape")  # drops the example
    page.locator("#example").wait_for(state="hidden")
    page.keyboard.press("/")
    page.keyboard.type("a blue square")
    page.locator("#results .tile").first.wait_for(timeout=15_000)
    wait_first_tile(page, items[0])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.item") == str(items[1])
    page.keyboard.press("Enter")
    dialog = page.locator("#detail")
    dialog.wait_for(state="visible")
    hit = server.client.get("/api/search", params={"q": "a blue square", "k": 48}).json()["hits"][1]
    facts = page.locator("#detail-facts")
    facts.get_by_text("Dimensions").wait_for(timeout=10_000)
    text = facts.inner_text()
    assert hit["path"] in text and f"{hit['score']:.4f}" in text and "xmodal-tiny-shapes" in text
    assert "128 × 128" in text and "KB" in text
    screenshot(page, "detail-view")
    page.keyboard.press("ArrowRight")
    page.locator("#detail-title").filter(
        has_text=Path(server.client.get(f"/api/items/{items[2]}").json()["path"]).name
    ).wait_for()
    page.keyboard.press("m")
    wait_first_tile(page, items[2])
    assert dialog.is_hidden() and tile_items(page) == like
    assert page.errors == []


def test_no_good_match_is_shown_as_such(page, tmp_path, clip_model_dir):
    """A CLIP-family model has a score floor; random weights put every photo below it."""
    photos = tmp_path / "photos"
    make_photo_tree(photos, 6)
    with Library(tmp_path / "lib") as lib:
        lib.index([photos], model=str(clip_model_dir))
        with running_server(Settings(), lib) as running:
            page.goto(running.url + "/")
            page.fill("#query", "a dog on a beach")
            status = page.locator("#status").filter(has_text="No good match")
            status.wait_for(timeout=15_000)
            assert "below 0.200" in status.inner_text() and page.locator("#results .tile").count() == 0
            screenshot(page, "no-good-match")
            page.click("#show-anyway")
            page.locator("#results .tile").first.wait_for(timeout=15_000)
            assert page.locator("#results .tile").count() == 6
    assert page.errors == []


def test_index_progress_indicator_follows_a_run_started_from_the_page(page, tmp_path):
    photos = tmp_path / "photos"
    make_photo_tree(photos, 4)
    with Library(tmp_path / "lib") as lib:
        lib.index([photos], model="xmodal-tiny-shapes")
        make_photo_tree(photos / "new", 300, start_seed=500)
        with running_server(Settings(), lib) as running:
            page.goto(running.url + "/")
            page.locator("#library-summary").filter(has_text="4 photos").wait_for(timeout=10_000)
            page.click("#reindex")
            page.locator("#indexing").wait_for(state="visible", timeout=10_000)
            screenshot(page, "indexing")
            page.locator("#index-text").filter(has_text="Indexed: 300 added").wait_for(timeout=60_000)
            page.locator("#library-summary").filter(has_text="304 photos").wait_for(timeout=10_000)
            assert page.locator("#reindex").is_visible()
            screenshot(page, "indexed")
    assert page.errors == []


# -- videos ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video_server(tmp_path_factory):
    """8 synth-shapes videos (two with a scene cut at 2 s) indexed with the shipped model, served."""
    import json

    from xmodal.datasets import SynthConfig, generate_synth_shapes

    folder = tmp_path_factory.mktemp("browser-videos")
    generate_synth_shapes(folder, SynthConfig(n=1, seed=3, videos=8))
    records = [json.loads(line) for line in (folder / "videos.jsonl").read_text().splitlines()]
    library = Library(folder / "library")
    library.index([folder / "videos"], model="xmodal-tiny-shapes")
    with running_server(Settings(), library) as running:
        yield running, records
    library.close()


def test_a_video_hit_plays_from_its_best_moment(page, video_server):
    server, records = video_server
    record = records[3]  # a scene cut at 2 s: the query describes the second scene
    scene = record["scenes"][1]
    query = f"a {scene['color']} {scene['shape']}"
    hits = server.client.get("/api/search", params={"q": query, "moments": 3, "min_score": -1}).json()["hits"]
    (hit,) = [h for h in hits if h["path"].endswith(record["path"])]
    assert hit["timestamp"] == 2.0 and [m["start"] for m in hit["moments"]] == [2.0, 0.0]
    page.goto(server.url + "/")
    page.locator("#status").filter(has_text="Type what you are looking for").wait_for(timeout=10_000)
    page.locator("#query").fill(query)
    tile = page.locator(f"#results .tile[data-item='{hit['item_id']}']")
    tile.wait_for(timeout=15_000)
    assert "▶ 0:02" in tile.inner_text()
    tile.click()
    video = page.locator("#detail-media video")
    video.wait_for(timeout=10_000)
    assert video.get_attribute("src").endswith(f"/api/items/{hit['item_id']}/file#t=2.000")
    page.wait_for_function(
        "() => { const v = document.querySelector('#detail-media video'); return v && v.readyState >= 1; }",
        timeout=15_000,
    )
    assert 2.0 <= page.evaluate("document.querySelector('#detail-media video').currentTime") < 4.0
    moments = page.locator("#detail-moments button")
    assert moments.count() == 1 and moments.first.inner_text().startswith("0:02")  # the other half is below the floor
    screenshot(page, "video-detail")
    assert page.errors == []
