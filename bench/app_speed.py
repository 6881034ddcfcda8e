"""How long the app takes from pressing Run to the players shown, for the bundled example with defaults.

Starts ``streamlit run app/streamlit_app.py`` on a free localhost port
(optionally pinned to some CPUs with ``taskset`` to emulate a small
machine), opens a fresh browser session per repeat in Debian's Chromium
(driven by Playwright; no Playwright browser download), clicks Run and
measures until every audio player (input, one per component, one per
source, residual) is in the page. Also reports the fit's own time as the
page states it. Not a test: run it by hand::

    python bench/app_speed.py                 # browser, 5 repeats
    python bench/app_speed.py --cpus 0,1      # the server on two cores
    python bench/app_speed.py --apptest       # no browser: server-side time through AppTest
    python bench/app_speed.py --first-paint --cpus 0,1   # page load -> controls usable

Targets: Run -> players under 3 s on a 2-core CPU (issue 4); with
``--first-paint``, a warm load (the server has served a page before) shows
usable controls (the model picker and an enabled Run button) within 3 s
(issue 18).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
AUDIO = '[data-testid="stAudio"]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cpus: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    if cpus:
        if not shutil.which("taskset"):
            sys.exit("taskset not found (util-linux)")
        cmd = ["taskset", "-c", cpus] + cmd
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("streamlit did not start")


def bench_browser(repeats: int, cpus: str | None, rank: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    proc, url = start_server(cpus)
    expected = 1 + rank + 2 + 1
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for i in range(repeats):
                page = browser.new_page(viewport={"width": 1366, "height": 900})  # a new session: nothing cached
                page.goto(url)
                page.wait_for_selector(AUDIO, timeout=90_000)
                # the page is loaded once Run is usable (plotly.js loads with the first fit's chart)
                page.wait_for_selector(".st-key-run button:not([disabled])", timeout=90_000)
                page.wait_for_timeout(500)
                t0 = time.perf_counter()
                page.locator(".st-key-run button").click()
                page.wait_for_function(f"document.querySelectorAll('{AUDIO}').length >= {1 + rank}",
                                       timeout=120_000, polling=20)
                t_components = time.perf_counter() - t0
                page.wait_for_function(f"document.querySelectorAll('{AUDIO}').length >= {expected}",
                                       timeout=120_000, polling=20)
                t_all = time.perf_counter() - t0
                status = page.locator('[data-testid="stProgress"]').first.inner_text()
                m = re.search(r"(\d+) iterations in ([\d.]+) s", status)
                rows.append({"run": i, "to_component_players_s": t_components, "to_all_players_s": t_all,
                             "iterations": int(m.group(1)) if m else None,
                             "fit_s": float(m.group(2)) if m else None})
                print(f"run {i}: component players {t_components:.2f} s, all players {t_all:.2f} s "
                      f"(fit + masks + grouping: {rows[-1]['fit_s']} s, {rows[-1]['iterations']} iterations)",
                      flush=True)
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


CONTROLS = ('[data-testid="stSidebar"] .st-key-model', '.st-key-run button:not([disabled])')


def bench_first_paint(repeats: int, cpus: str | None) -> list[dict]:
    """Seconds from ``page.goto`` to the title, and to usable controls, per fresh session on a warm server."""
    from playwright.sync_api import sync_playwright

    proc, url = start_server(cpus)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for i in range(repeats + 1):  # the first load warms the server (imports, caches) and is not counted
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                t0 = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("h1", timeout=120_000)
                t_title = time.perf_counter() - t0
                for sel in CONTROLS:
                    page.wait_for_selector(sel, timeout=120_000)
                t_controls = time.perf_counter() - t0
                page.wait_for_selector(AUDIO, timeout=120_000)
                t_player = time.perf_counter() - t0
                label = "cold (not counted)" if i == 0 else f"warm {i}"
                print(f"{label}: title {t_title:.2f} s, controls usable {t_controls:.2f} s, "
                      f"input player {t_player:.2f} s", flush=True)
                if i:
                    rows.append({"run": i, "title_s": t_title, "to_controls_s": t_controls, "to_player_s": t_player})
                page.close()
                time.sleep(1.0)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def bench_apptest(repeats: int, rank: int) -> list[dict]:
    from streamlit.testing.v1 import AppTest

    rows = []
    for i in range(repeats):
        at = AppTest.from_file(str(ROOT / "app" / "streamlit_app.py"), default_timeout=120)
        at.run()
        t0 = time.perf_counter()
        at.button(key="run").click().run()
        dt = time.perf_counter() - t0
        n_audio = len(at.get("audio"))
        assert n_audio == 1 + rank + 2 + 1, n_audio
        rows.append({"run": i, "to_all_players_s": dt})
        print(f"run {i}: server-side Run -> page with players {dt:.2f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpus", default=None, help="taskset CPU list for the server, e.g. 0,1")
    ap.add_argument("--apptest", action="store_true", help="no browser: time the script run through AppTest")
    ap.add_argument("--first-paint", action="store_true",
                    help="time a warm page load until the controls are usable (no fit)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from app import services

    rank = services.default_settings().rank
    print(f"cpus: {os.cpu_count()} (server pinned to {args.cpus or 'all'}), load average "
          f"{os.getloadavg()[0]:.2f}; example {services.EXAMPLE_PATH.name}; "
          f"settings: {services.settings_summary(services.default_settings())}", flush=True)
    if args.first_paint:
        if not Path(CHROMIUM).exists():
            sys.exit(f"{CHROMIUM} not found (apt-get install chromium)")
        rows = bench_first_paint(args.repeats, args.cpus)
        values = [r["to_controls_s"] for r in rows]
        print(f"warm load -> controls usable: median {statistics.median(values):.2f} s, best {min(values):.2f} s, "
              f"worst {max(values):.2f} s over {len(values)} loads (target < 3 s on 2 cores)")
        return
    if args.apptest:
        rows = bench_apptest(args.repeats, rank)
    else:
        if not Path(CHROMIUM).exists():
            sys.exit(f"{CHROMIUM} not found (apt-get install chromium), or use --apptest")
        rows = bench_browser(args.repeats, args.cpus, rank)
    values = [r["to_all_players_s"] for r in rows]
    print(f"Run -> all players: median {statistics.median(values):.2f} s, best {min(values):.2f} s, "
          f"worst {max(values):.2f} s over {len(values)} runs (target < 3 s on 2 cores)")


if __name__ == "__main__":
    main()
