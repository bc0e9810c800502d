"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

`redis-patterns dashboard` runs as a subprocess on a real server whose queue holds pending and
dead-lettered entries; the browser loads the page, replays one dead letter (click, confirm) and
a running worker handles it; the page refreshes by itself. Without a browser the test skips,
saying why, unless ``REDIS_PATTERNS_REQUIRE_BROWSER=1`` (set by .ci/run) makes that a failure.
``REDIS_PATTERNS_SCREENSHOTS=1`` (``make screenshots``) also writes docs/img/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_patterns import EmbeddedServer, Leaderboard, Lock, StreamMessage, StreamQueue, Worker

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
pytestmark = pytest.mark.slow


def browser_or_skip() -> Any:
    """Playwright's sync API, or a skip (a failure under REDIS_PATTERNS_REQUIRE_BROWSER=1)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install playwright)"
    if reason is None and not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        reason = "no Chromium at /usr/bin/chromium (apt-get install chromium chromium-driver)"
    if reason is not None:
        if os.environ.get("REDIS_PATTERNS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"REDIS_PATTERNS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return sync_playwright


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def dashboard() -> Iterator[Callable[..., str]]:
    """``dashboard(url, *flags)`` starts `redis-patterns dashboard`; returns its base URL."""
    started: list[subprocess.Popen[str]] = []

    def start(url: str, *flags: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "redis_patterns.cli", "dashboard", "--url", url,
             "--port", str(port), "--refresh", "0.5", "--scan-every", "0.5", *flags],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dashboard for "), line
        base = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # uvicorn prints nothing once it listens: poll
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return base
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the dashboard did not start listening")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def test_replay_a_dead_letter_from_the_browser(
    server_factory: Callable[..., EmbeddedServer], dashboard: Callable[..., str], tmp_path: Path
) -> None:
    sync_playwright = browser_or_skip()
    server = server_factory()  # a private server: the page (and the screenshot) show only this
    client = server.client()
    queue = StreamQueue(client, "emails")
    for n in range(3):
        queue.add({"to": f"user{n}@example.com", "template": "welcome"})

    def smtp_down(message: StreamMessage) -> None:
        raise ConnectionError("smtp.example.com: connection refused")

    failing = Worker(queue, "mailer-1", smtp_down, max_deliveries=1, block=0.05, reap_idle=None)
    while queue.info().dead_letters < 3:
        failing.run_once()
    for n in range(2):
        queue.add({"to": f"late{n}@example.com", "template": "digest"})
    client.xreadgroup("workers", "mailer-2", {queue.key: ">"}, count=2)  # pending, held
    held = Lock(client, "orders:42", ttl=60.0)
    held.acquire()
    StreamQueue(client, "thumbnails").add({"image": "img/1.png"})
    board = Leaderboard(client, "weekly-score")
    for member, score in (("ada", 1200), ("grace", 1150), ("linus", 980)):
        board.add(member, score)
    letters = queue.dead_letters()

    # The mail server is back: a worker handles whatever comes, here the replayed letter.
    handled: list[StreamMessage] = []
    live = Worker(queue, "mailer-3", handled.append, block=0.1, claim_idle=600.0)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    base = dashboard(server.url)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(base)
            section = page.locator('section.queue[data-queue="emails"]')
            section.locator("button.replay").first.wait_for()
            text = section.inner_text()
            assert "dead letters (3)" in text
            assert "ConnectionError: smtp.example.com: connection refused" in text
            assert "mailer-2" in text  # the holder of the pending entries
            assert "orders:42" in page.inner_text("main")
            assert "ada" in page.inner_text("main")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            if os.environ.get("REDIS_PATTERNS_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)

            asked: list[str] = []

            def accept(dialog: Any) -> None:
                asked.append(dialog.message)
                dialog.accept()

            page.on("dialog", accept)
            section.locator(f'button.replay[data-ids="{letters[0].id}"]').click()
            page.wait_for_function(
                "document.getElementById('message').textContent.includes('replayed 1')"
            )
            assert asked == [f"Replay dead letter {letters[0].id} of queue emails?"]
            deadline = time.monotonic() + 20
            while not handled and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [(m.data["to"], m.replays, m.original_id) for m in handled] == [
                ("user0@example.com", 1, letters[0].original_id)
            ]
            # The page refreshes by itself: two letters left, and a lock taken since shows up.
            Lock(client, "reports:daily", ttl=60.0).acquire()
            page.wait_for_function(
                "document.querySelector('main').innerText.includes('reports:daily')"
            )
            assert "dead letters (2)" in section.inner_text()
            browser.close()
    finally:
        live.stop()
        thread.join(10)
    assert [d.id for d in queue.dead_letters()] == [letters[1].id, letters[2].id]


def test_read_only_dashboard_in_the_browser(
    valkey_server: EmbeddedServer, prefix: str, dashboard: Callable[..., str]
) -> None:
    sync_playwright = browser_or_skip()
    queue = StreamQueue(valkey_server.client(), f"{prefix}-ro")
    queue.add({"n": 1})

    def fail(message: StreamMessage) -> None:
        raise ValueError("nope")

    worker = Worker(queue, "w", fail, max_deliveries=1, block=0.05, reap_idle=None)
    while queue.info().dead_letters < 1:
        worker.run_once()
    base = dashboard(valkey_server.url, "--read-only")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(base)
        button = page.locator(f'section.queue[data-queue="{prefix}-ro"] button.replay').first
        button.wait_for()
        assert button.is_disabled()
        assert "read-only" in page.inner_text("header")
        browser.close()
    assert len(queue.dead_letters()) == 1
