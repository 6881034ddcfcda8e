"""The app in a real browser: ``streamlit run`` on a free localhost port, driven by Debian's Chromium.

Playwright for Python drives ``/usr/bin/chromium`` (``apt-get install
chromium``); Playwright's own browser downloads are not used. The tests skip,
with the reason, where Chromium or Playwright is missing. Screenshots go to
pytest's ``tmp_path`` and are copied to ``/tmp/nmfcore_screens/``.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
SCREENS = Path("/tmp/nmfcore_screens")
VIEWPORT = {"width": 1366, "height": 900}   # a laptop
DEFAULT_RANK = 8
AUDIO = '[data-testid="stAudio"]'
EXCEPTION = '[data-testid="stException"]'


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright for Python is not installed (pip install playwright; no `playwright install` needed)"
    try:
        import streamlit  # noqa: F401
    except ImportError:
        return "streamlit is not installed (pip install streamlit plotly)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def until_shown(action, locator, attempts: int = 3, timeout: int = 30_000) -> None:
    """Do ``action`` until ``locator`` shows: a click that lands while the page re-renders (after an upload,
    under heavy load) can be lost, and doing it again is what a user does."""
    for attempt in range(attempts):
        action()
        try:
            locator.wait_for(timeout=timeout)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tone_wav(path: Path, seconds: float = 3.0, sr: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.4 * np.sin(2 * np.pi * 330 * t) * (t < seconds / 2) + 0.3 * np.sin(2 * np.pi * 1250 * t) * (t >= seconds / 3)
    y += 0.1 * rng.standard_normal(t.size) * ((t % 0.5) < 0.05)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV")
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Full-height screenshot (Streamlit scrolls inside the page, so grow the viewport first)."""
    height = page.evaluate(  # the bottom of the lowest element drawn in the main area
        "() => Math.max(0, ...Array.from(document.querySelectorAll("
        "'[data-testid=\"stMain\"] [data-testid=\"stElementContainer\"]'))"
        ".filter(e => e.offsetParent !== null && e.getBoundingClientRect().height > 0)"
        ".map(e => e.getBoundingClientRect().bottom)) + 60")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 4000)})
    page.wait_for_timeout(500)
    path = tmp_path / name
    page.screenshot(path=str(path))
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / name)
    page.set_viewport_size(VIEWPORT)
    return path


def open_app(browser, url):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_selector(AUDIO, timeout=60_000)  # the bundled example's player
    return page


def test_rejected_uploads_say_why_on_the_page(server, browser, tmp_path):
    """A file over the size limit, or not audio, is refused with its reason in the page (not only in a
    chip's hover text), the page says what is shown instead, and Run is off."""
    page = open_app(browser, server)
    page.wait_for_timeout(500)
    assert not page.get_by_text("200MB per file").is_visible()  # the widget's ceiling is not the app's limit
    uploader = page.locator(".st-key-upload input[type=file]")
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + bytes(21 * 2**20))
    uploader.set_input_files(str(big))
    alert = page.locator('[data-testid="stAlertContentError"]').first
    alert.wait_for(timeout=60_000)
    assert "big.wav" in alert.inner_text() and "20 MB" in alert.inner_text()
    page.get_by_text("go back to the bundled example").wait_for(timeout=30_000)  # drawn just after the error
    page.wait_for_selector(".st-key-run button[disabled]", timeout=30_000)
    assert page.get_by_text("File must be 20.0MB or smaller").count() == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("These are my notes, not audio.\n" * 20)
    uploader.set_input_files(str(notes))
    page.get_by_text("notes.txt is not a recording the app can read").wait_for(timeout=30_000)
    page.wait_for_selector(".st-key-run button[disabled]", timeout=30_000)
    assert page.locator(EXCEPTION).count() == 0
    save_screenshot(page, tmp_path, "app_rejected_upload.png")
    page.close()


def test_nmf2d_fit_whose_loss_reaches_zero_finishes(server, browser, tmp_path):
    """NMF2D with as many frequency shifts as bins copies the spectrogram: the loss reaches 0 (nothing to
    draw on a log axis). The live chart used to raise StreamlitDuplicateElementId and freeze the page."""
    page = open_app(browser, server)
    page.locator(".st-key-upload input[type=file]").set_input_files(str(tone_wav(tmp_path / "tones.wav")))
    page.get_by_text("Uploaded: tones.wav").wait_for(timeout=30_000)
    def pick_nmf2d():
        page.locator('[data-testid="stSidebar"] .st-key-model').click()
        page.get_by_role("option", name="NMF 2-D deconvolution (NMF2D)").click()

    until_shown(pick_nmf2d, page.get_by_role("spinbutton", name="Frames per patch"))
    assert page.get_by_role("spinbutton", name="Frequency shifts").input_value() == "4"  # NMF2D's defaults
    for label, value in (("Frequency shifts", "257"), ("Frames per patch", "1"), ("Iterations", "1000")):
        box = page.get_by_role("spinbutton", name=label)
        box.fill(value)
        box.press("Enter")
        page.wait_for_timeout(700)
    tol = page.get_by_role("slider", name="Tolerance")
    tol.focus()
    tol.press("Home")  # run all iterations: many reports of a zero loss
    page.wait_for_timeout(500)
    page.locator(".st-key-run button").click()
    n_players = 1 + 8 + 2 + 1
    page.wait_for_function(f"document.querySelectorAll('{AUDIO}').length >= {n_players}", timeout=120_000)
    page.get_by_text("done:").first.wait_for(timeout=30_000)
    assert page.locator(EXCEPTION).count() == 0
    assert page.get_by_text("reproduces the spectrogram exactly").count() >= 1
    save_screenshot(page, tmp_path, "app_nmf2d_zero_loss.png")
    page.close()


def test_nothing_is_fetched_from_other_hosts(server, browser, tmp_path):
    """The favicon and everything else come from the app's own server: it works offline."""
    page = browser.new_page(viewport=VIEWPORT)
    foreign = []
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else None)
    page.goto(server)
    page.wait_for_selector(AUDIO, timeout=60_000)
    page.wait_for_timeout(1500)
    icon = page.locator("link[rel~=icon]").first.get_attribute("href") or ""
    assert not icon.startswith("http") or icon.startswith(server), icon
    assert foreign == [], foreign
    page.close()


def test_phone_has_the_essential_settings_and_run_in_the_page(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(server)
    page.wait_for_selector(AUDIO, timeout=60_000)
    quick = page.locator(".st-key-quick_settings")
    assert quick.is_visible()
    assert page.get_by_role("slider", name="Rank").first.is_visible()
    assert page.locator(".st-key-run button").is_visible()
    save_screenshot(page, tmp_path, "app_phone.png")
    page.close()
    desktop = open_app(browser, server)
    assert not desktop.locator(".st-key-quick_settings").is_visible()  # the sidebar has them
    desktop.close()


def test_upload_run_players_and_screenshot(server, browser, tmp_path):
    page = open_app(browser, server)
    assert page.get_by_text("Bundled example").count() >= 1
    wav = tone_wav(tmp_path / "tones.wav")
    page.locator(".st-key-upload input[type=file]").set_input_files(str(wav))
    page.get_by_text("Uploaded: tones.wav").wait_for(timeout=30_000)

    page.locator(".st-key-run button").click()
    expected = 1 + DEFAULT_RANK + 2 + 1  # input, components, two sources, residual
    page.wait_for_function(f"document.querySelectorAll('{AUDIO}').length >= {expected}", timeout=90_000)
    page.get_by_text("done:").first.wait_for(timeout=30_000)
    assert page.locator(EXCEPTION).count() == 0
    assert page.locator(AUDIO).count() == expected
    # a spectrogram image per component (drawn once the image has loaded)
    page.wait_for_function(f"document.querySelectorAll('[data-testid=\"stImage\"]').length >= {DEFAULT_RANK}",
                           timeout=30_000)
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1  # the loss curve
    # every card's player is wide enough for its seek bar
    widths = page.evaluate("() => Array.from(document.querySelectorAll('[class*=\"st-key-card_\"] audio'))"
                           ".map(a => a.getBoundingClientRect().width)")
    assert len(widths) == DEFAULT_RANK and min(widths) >= 250, widths
    shot = save_screenshot(page, tmp_path, "app_after_run.png")
    assert shot.stat().st_size > 10_000

    page.get_by_role("tab", name="Spectrograms").click()
    page.get_by_text("Reconstruction WH").wait_for(timeout=30_000)
    assert page.locator(EXCEPTION).count() == 0
    save_screenshot(page, tmp_path, "app_spectrograms.png")
    page.close()


def test_long_fit_stays_responsive_and_stops(server, browser, tmp_path):
    page = open_app(browser, server)
    iters = page.get_by_label("Iterations")
    iters.fill("5000")
    iters.press("Enter")
    page.wait_for_timeout(500)
    tol = page.get_by_role("slider", name="Tolerance")
    tol.focus()
    tol.press("Home")  # "off": run all iterations unless stopped
    page.get_by_text("off").first.wait_for(timeout=10_000)

    page.locator(".st-key-run button").click()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('[data-testid=\"stProgress\"]'))"
        ".some(e => /iteration \\d+ \\/ 5000/.test(e.innerText))", timeout=60_000)
    # the page answers while the fit runs: a display option and a tab switch rerun the page
    page.get_by_text("Log frequency").click()
    page.get_by_role("tab", name="How it works").click()
    page.get_by_text("Update rule").wait_for(timeout=30_000)
    progress = page.locator('[data-testid="stProgress"]').first
    first = progress.inner_text()
    page.wait_for_timeout(1500)
    assert progress.inner_text() != first  # the live progress keeps moving
    assert page.locator(EXCEPTION).count() == 0

    page.locator(".st-key-stop button").click()  # ours, not the header's script-run Stop
    page.get_by_text("Stopped after").wait_for(timeout=60_000)
    page.get_by_role("tab", name="Components & sources").click()
    page.wait_for_function(f"document.querySelectorAll('{AUDIO}').length >= {1 + DEFAULT_RANK}", timeout=60_000)
    page.get_by_text("Download all").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # let the previous tab's content go
    assert page.locator(EXCEPTION).count() == 0
    save_screenshot(page, tmp_path, "app_stopped.png")
    page.close()


def _drag_box(page, chart, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag a box on a Plotly chart, from and to fractions of its plot area (0, 0: top left)."""
    area = page.locator(f"{chart} .nsewdrag").first
    area.wait_for(timeout=60_000)
    area.scroll_into_view_if_needed()
    b = area.bounding_box()
    page.mouse.move(b["x"] + x0 * b["width"], b["y"] + y0 * b["height"])
    page.mouse.down()
    for f in (0.25, 0.5, 0.75, 1.0):  # in steps, as a hand does: Plotly follows mouse moves
        page.mouse.move(b["x"] + (x0 + f * (x1 - x0)) * b["width"], b["y"] + (y0 + f * (y1 - y0)) * b["height"])
        page.wait_for_timeout(100)
    page.mouse.up()


def _wait_for_choice(page, widget: str, text: str) -> None:
    """Wait until a selectbox shows ``text`` (as text or as its input's value)."""
    page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel); if (!e) return false; "
        "return e.innerText.includes(text) || Array.from(e.querySelectorAll('input'))"
        ".some(i => (i.value || '').includes(text)); }", arg=[widget, text], timeout=60_000)


def _guided_tab_with_two_sources(browser, server, tmp_path):
    """The app on the two-tone upload, in the guided tab with sources "low" and "high", "low" picked."""
    page = open_app(browser, server)
    page.locator(".st-key-upload input[type=file]").set_input_files(str(tone_wav(tmp_path / "tones.wav")))
    page.get_by_text("Uploaded: tones.wav").wait_for(timeout=30_000)
    names = page.get_by_label("Sources (names, comma-separated)")
    until_shown(page.get_by_role("tab", name="Guided separation").click, names)
    names.fill("low, high")
    names.press("Enter")
    page.get_by_text("Mark for").wait_for(timeout=30_000)
    _wait_for_choice(page, ".st-key-guided_source", "low")
    return page


def test_guided_marks_separate_players(server, browser, tmp_path):
    """Issue 17: drag a box on the mixture's spectrogram, assign it to a source, press Separate, and one
    player (and download) per named source appears."""
    page = _guided_tab_with_two_sources(browser, server, tmp_path)
    chart = ".st-key-guided_mix"
    # the 330 Hz tone sounds alone in the first third: the bottom-left of the plane is "low"'s
    _drag_box(page, chart, 0.05, 0.4, 0.3, 0.98)
    page.get_by_text("only low here").wait_for(timeout=60_000)
    # pick the other source, then mark the top of the last part (the 1250 Hz tone alone)
    page.locator(".st-key-guided_source").click()
    page.get_by_role("option", name="high").click()
    _wait_for_choice(page, ".st-key-guided_source", "high")
    _drag_box(page, chart, 0.7, 0.05, 0.95, 0.9)
    page.get_by_text("only high here").wait_for(timeout=60_000)
    assert page.locator(EXCEPTION).count() == 0
    page.locator(".st-key-guided_separate button").click()
    for k in range(2):
        page.locator(f".st-key-guided_source_{k} audio").first.wait_for(state="attached", timeout=120_000)
    page.locator(".st-key-guided_dl_0").wait_for(timeout=30_000)
    assert "low" in page.locator(".st-key-guided_source_0").inner_text()
    assert "high" in page.locator(".st-key-guided_source_1").inner_text()
    with page.expect_download(timeout=60_000) as download:  # named after the recording and the source
        page.locator(".st-key-guided_dl_1 button").click()
    assert download.value.suggested_filename == "tones_high.wav"
    assert page.locator(EXCEPTION).count() == 0
    save_screenshot(page, tmp_path, "app_guided.png")
    page.close()


def _drag_path(page, chart, points) -> None:
    """Draw a closed path with the pressed mouse on a Plotly chart, through fractions of its plot area."""
    area = page.locator(f"{chart} .nsewdrag").first
    area.wait_for(timeout=60_000)
    area.scroll_into_view_if_needed()
    b = area.bounding_box()
    xy = [(b["x"] + x * b["width"], b["y"] + y * b["height"]) for x, y in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for (xa, ya), (xb, yb) in zip(xy, xy[1:] + xy[:1]):
        for f in (0.25, 0.5, 0.75, 1.0):  # in steps, as a hand does: the lasso follows mouse moves
            page.mouse.move(xa + f * (xb - xa), ya + f * (yb - ya))
            page.wait_for_timeout(50)
    page.mouse.up()


def test_guided_lasso_marks_its_polygon(server, browser, tmp_path):
    """Issue 17: with Plotly's lasso tool, a region drawn on the mixture's spectrogram becomes a polygon
    mark (listed as a lasso, drawn as its outline), not its bounding box."""
    page = _guided_tab_with_two_sources(browser, server, tmp_path)
    chart = ".st-key-guided_mix"
    page.locator(chart).hover()
    page.locator(f"{chart} .modebar-btn[data-title='Lasso Select']").first.click()
    _drag_path(page, chart, [(0.1, 0.3), (0.4, 0.35), (0.25, 0.9)])
    page.get_by_text("lasso within").wait_for(timeout=60_000)
    assert page.locator(EXCEPTION).count() == 0
    # the mark is drawn as a path (its outline), not as a rectangle
    page.wait_for_function(f"document.querySelectorAll(\"{chart} .shapelayer path\").length >= 1", timeout=30_000)
    save_screenshot(page, tmp_path, "app_guided_lasso.png")
    page.close()
