"""A real Django site (``django_site.py``) under gunicorn with 4 worker processes, driven by
``hey``: a login made through one worker is seen by every worker, ``destroy_user`` logs the user
out in every worker at once, and no request gets a 500."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from redis_patterns import EmbeddedServer

pytest.importorskip("django")
pytest.importorskip("gunicorn")

HERE = Path(__file__).parent
HEY = shutil.which("hey")
# .ci/run installs hey and sets this, so a missing hey fails there instead of skipping quietly.
HEY_REQUIRED = os.environ.get("REDIS_PATTERNS_REQUIRE_HEY") == "1"
WORKERS = 4
REQUESTS, CONCURRENCY = 2000, 20


def _env(tmp_path: Path, server: EmbeddedServer, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "RP_DJANGO_DB": str(tmp_path / "site.sqlite3"),
        "RP_DJANGO_URL": f"redis://127.0.0.1:{server.port}/0",
        "RP_DJANGO_NAMESPACE": prefix,
    }


@pytest.fixture
def site(tmp_path: Path, valkey_server: EmbeddedServer, prefix: str) -> Iterator[tuple[str, Path]]:
    """The site's base URL under gunicorn (4 workers), and gunicorn's log file."""
    env = _env(tmp_path, valkey_server, prefix)
    subprocess.run(
        [sys.executable, str(HERE / "django_site.py"), "setup"], env=env, check=True, timeout=120
    )
    log = tmp_path / "gunicorn.log"
    command = [
        *(sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--bind", "127.0.0.1:0"),
        *("--preload", "--chdir", str(HERE), "--error-logfile", str(log), "--log-level", "info"),
        "django_site:application",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline and process.poll() is None:
            text = log.read_text() if log.exists() else ""
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            if found and text.count("Booting worker") >= WORKERS:
                port = int(found.group(1))
                break
            time.sleep(0.1)
        assert port is not None, log.read_text() if log.exists() else "gunicorn did not start"
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.send_signal(signal.SIGTERM)  # gunicorn's graceful stop; only our own process
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _request(
    base: str, path: str, cookie: str | None = None, method: str = "GET"
) -> tuple[int, str, str, str | None]:
    """One request on a new connection: status, body, worker pid, the session cookie set."""
    request = urllib.request.Request(
        base + path, method=method, data=b"" if method == "POST" else None
    )
    if cookie is not None:
        request.add_header("Cookie", f"sessionid={cookie}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, headers = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        status, body, headers = error.code, error.read().decode(), error.headers
    set_cookie = None
    for header in headers.get_all("Set-Cookie") or []:
        found = re.match(r"sessionid=([^;]*);", header)
        if found:
            set_cookie = found.group(1)
    return status, body, headers.get("X-Worker", ""), set_cookie


def _hey(base: str, path: str, cookie: str, method: str = "GET") -> Counter[int]:
    """``hey`` with ``REQUESTS`` requests, ``CONCURRENCY`` at a time: the status code counts."""
    assert HEY is not None, "REDIS_PATTERNS_REQUIRE_HEY=1 but hey is not installed"
    done = subprocess.run(
        [
            *(HEY, "-n", str(REQUESTS), "-c", str(CONCURRENCY), "-m", method, "-t", "10"),
            *("-H", f"Cookie: sessionid={cookie}", base + path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    codes: Counter[int] = Counter()
    for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", done.stdout):
        codes[int(code)] += int(count)
    assert "Error distribution" not in done.stdout, done.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    slowest = re.search(r"Slowest:\s+([\d.]+)", done.stdout)
    print(
        f"hey {method} {path}: {dict(codes)}, {rate.group(1) if rate else '?'} requests/s,"
        f" slowest {slowest.group(1) if slowest else '?'} s"
    )
    return codes


def _login(base: str, user: str) -> str:
    status, body, _, cookie = _request(base, f"/login?user={user}", method="POST")
    assert (status, body) == (200, user)
    assert cookie is not None
    return cookie


def _spread_reads(base: str, cookie: str) -> list[tuple[int, str, str, str | None]]:
    """Reads of ``/me`` until two workers have answered (at most 10 rounds of 40).

    Sequential requests on an idle site can all be accepted by one worker: the kernel wakes
    whichever worker sits in ``accept`` first, often the one that has just finished. Requests
    8 at a time keep a sync worker busy, so others accept; the bounded rounds stop by
    themselves and the assertion still fails if only one worker ever answers."""
    seen: list[tuple[int, str, str, str | None]] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):
            seen += pool.map(lambda _: _request(base, "/me", cookie), range(40))
            if len({worker for _, _, worker, _ in seen}) >= 2:
                break
    return seen


@pytest.mark.slow
@pytest.mark.skipif(HEY is None and not HEY_REQUIRED, reason="hey is not installed")
def test_sessions_are_shared_across_gunicorn_workers(site: tuple[str, Path]) -> None:
    base, log = site
    phone, laptop, bob = _login(base, "alice"), _login(base, "alice"), _login(base, "bob")
    assert len({phone, laptop, bob}) == 3
    # read through many workers: each one finds the login made through another
    seen = _spread_reads(base, phone)
    assert {(status, body) for status, body, _, _ in seen} == {(200, "alice")}
    assert len({worker for _, _, worker, _ in seen}) >= 2, Counter(w for _, _, w, _ in seen)
    assert _hey(base, "/me", phone) == {200: REQUESTS}
    assert _hey(base, "/visit", laptop, method="POST") == {200: REQUESTS}
    # log out everywhere, through one worker: every worker sees both of alice's sessions gone
    assert _request(base, "/logout-everywhere", phone, method="POST")[:2] == (200, "2")
    assert _hey(base, "/me", phone) == {403: REQUESTS}
    assert _request(base, "/me", laptop)[:2] == (403, "anonymous")
    assert _request(base, "/me", bob)[:2] == (200, "bob")
    # a plain logout ends only that session
    assert _request(base, "/logout", bob, method="POST")[0] == 200
    assert _request(base, "/me", bob)[:2] == (403, "anonymous")
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "Internal Server Error" not in text, text
