"""The dashboard app over HTTP (no browser): content, mutations, CSRF, tokens, hosts, binds."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from redis_patterns import (
    ConfigurationError,
    Leaderboard,
    Lock,
    StreamMessage,
    StreamQueue,
    Worker,
)
from redis_patterns.cli import main
from redis_patterns.cli.dashboard import DashboardData, check_bind, create_app
from redis_patterns.testing.pytest_plugin import Backend


def _fail(message: StreamMessage) -> None:
    raise ValueError("<b>bad</b> payload")


def seed(client: Any, prefix: str) -> StreamQueue:
    """A queue with 2 dead letters (one hostile payload), 1 pending entry, a lock, a board."""
    queue = StreamQueue(client, prefix)
    queue.add({"html": "<script>alert(1)</script>"})
    queue.add({"n": 2})
    worker = Worker(queue, "failing", _fail, max_deliveries=1, block=0.05, reap_idle=None)
    while queue.info().dead_letters < 2:
        worker.run_once()
    queue.add({"n": 3})
    client.xreadgroup("workers", "stuck", {queue.key: ">"}, count=1)
    Lock(client, f"{prefix}:lock", ttl=30.0).acquire()
    board = Leaderboard(client, f"{prefix}-board")
    board.add("ada", 10)
    board.add("bob", 7)
    return queue


def http(app: Any, **headers: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080", headers=headers)


def csrf_of(page: str) -> str:
    match = re.search(r'const CSRF = "([^"]+)"', page)
    assert match is not None
    return match.group(1)


async def test_the_page_shows_queues_locks_boards_and_a_metrics_placeholder(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    queue = seed(client, prefix)
    data = DashboardData(client, scan_every=0)
    async with http(create_app(data)) as browser:
        page = (await browser.get("/")).text
        state = (await browser.get("/api/state")).json()
    [shown] = [q for q in state["queues"] if q["name"] == prefix]
    assert shown["dead_letters"] == 2
    assert [d["error"] for d in shown["dead"]] == ["ValueError: <b>bad</b> payload"] * 2
    [group] = shown["groups"]
    assert [p["consumer"] for p in group["pending"]] == ["stuck"]
    assert {c["name"] for c in group["info"]["consumers"]} == {"failing", "stuck"}
    assert f"{prefix}:lock" in {lock["name"] for lock in state["locks"]}
    [board] = [b for b in state["leaderboards"] if b["name"] == f"{prefix}-board"]
    assert board["top"] == [["ada", 10.0], ["bob", 7.0]]
    assert state["metrics"] is None
    # Everything from the server is escaped: the payload and the error never become markup.
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bad</b>" not in page
    for letter in queue.dead_letters():
        assert f'data-ids="{letter.id}"' in page
    assert 'id="metrics"' in page
    assert "No metrics source" in page  # no --metrics-url
    assert "setInterval(refresh" in page  # it refreshes by itself


async def test_the_metrics_section_shows_an_apps_prometheus_endpoint(
    backend: Backend, prefix: str
) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from redis_patterns import FixedWindow, metrics

    client = backend.client()
    registry = CollectorRegistry()
    metrics.use_prometheus(registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        limiter = FixedWindow(client, 2, 86400, name=f"{prefix}-api")
        for _ in range(3):
            limiter.hit("<user-7>")
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        async with http(create_app(DashboardData(client, metrics_url=url))) as browser:
            state = (await browser.get("/api/state")).json()
            page = (await browser.get("/")).text
        shown = {
            (m["labels"]["decision"], m["value"])
            for m in state["metrics"]["series"]
            if m["name"] == "redis_patterns_limiter_decisions_total"
            and m["labels"]["limiter"] == f"{prefix}-api"
        }
        assert shown == {("allowed", 2.0), ("refused", 1.0)}
        assert state["metrics"]["error"] is None
        assert "redis_patterns_limiter_decisions_total" in page
        assert "user-7" not in page
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        metrics.disable()
    unreachable = DashboardData(client, metrics_url=url)  # nothing listens there any more
    assert unreachable.view()["metrics"]["error"]


async def test_replay_and_purge_through_the_api(backend: Backend, prefix: str) -> None:
    client = backend.client()
    queue = seed(client, prefix)
    first, second = queue.dead_letters()
    async with http(create_app(DashboardData(client))) as browser:
        csrf = csrf_of((await browser.get("/")).text)
        body: dict[str, Any] = {"queue": prefix, "group": "workers", "ids": [first.id]}
        replayed = await browser.post("/api/replay", json=body, headers={"X-CSRF-Token": csrf})
        assert replayed.status_code == 200
        assert list(replayed.json()["replayed"]) == [first.id]
        body = {"queue": prefix, "ids": None}
        purged = await browser.post("/api/purge", json=body, headers={"X-CSRF-Token": csrf})
        assert purged.json() == {"purged": 1}
        bad = await browser.post(
            "/api/replay", json={"queue": prefix, "ids": "x"}, headers={"X-CSRF-Token": csrf}
        )
        assert bad.status_code == 400
        bad = await browser.post(
            "/api/replay", json={"queue": prefix, "ids": ["x"]}, headers={"X-CSRF-Token": csrf}
        )
        assert bad.status_code == 400
    assert queue.dead_letters() == []
    assert second.id not in {d.id for d in queue.dead_letters()}


@pytest.mark.backends("valkey")
async def test_mutations_need_the_csrf_header_post_and_a_loopback_host(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    queue = seed(client, prefix)
    body = {"queue": prefix, "ids": None}
    async with http(create_app(DashboardData(client))) as browser:
        csrf = csrf_of((await browser.get("/")).text)
        # A cross-site form can POST, but cannot set a header: refused.
        assert (await browser.post("/api/purge", json=body)).status_code == 403
        wrong = {"X-CSRF-Token": "guess"}
        assert (await browser.post("/api/purge", json=body, headers=wrong)).status_code == 403
        assert (await browser.get("/api/purge")).status_code == 405
        # DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends its own Host.
        rebound = {"X-CSRF-Token": csrf, "Host": "evil.example"}
        assert (await browser.post("/api/purge", json=body, headers=rebound)).status_code == 400
    assert len(queue.dead_letters()) == 2


@pytest.mark.backends("valkey")
async def test_read_only_disables_the_buttons_and_refuses_mutations(
    backend: Backend, prefix: str
) -> None:
    client = backend.client()
    queue = seed(client, prefix)
    async with http(create_app(DashboardData(client), read_only=True)) as browser:
        page = (await browser.get("/")).text
        refused = await browser.post(
            "/api/replay",
            json={"queue": prefix, "ids": None},
            headers={"X-CSRF-Token": csrf_of(page)},
        )
    assert refused.status_code == 403
    assert "read-only" in page
    buttons = re.findall(r"<button [^>]*>", page)
    assert buttons
    assert all("disabled" in button for button in buttons)
    assert len(queue.dead_letters()) == 2


@pytest.mark.backends("valkey")
async def test_a_token_guards_every_request(backend: Backend, prefix: str) -> None:
    client = backend.client()
    queue = seed(client, prefix)
    token = "t" * 32
    app = create_app(DashboardData(client), token=token)
    async with http(app) as browser:
        assert (await browser.get("/")).status_code == 401
        assert (await browser.get("/api/state")).status_code == 401
        assert (await browser.get("/?token=wrong")).status_code == 401
        entered = await browser.get(f"/?token={token}")
        assert entered.status_code == 303  # the token moves into a cookie, out of the URL
        assert entered.headers["location"] == "/"
        cookie = entered.headers["set-cookie"]
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        page = await browser.get("/")  # the client keeps the cookie
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        body = {"queue": prefix, "ids": None}
        purged = await browser.post("/api/purge", json=body, headers={"X-CSRF-Token": csrf})
        assert purged.json() == {"purged": 2}
    async with http(app, Authorization=f"Bearer {token}") as scripted:
        assert (await scripted.get("/api/state")).status_code == 200
    async with http(app) as stranger:
        body = {"queue": prefix, "ids": None}
        refused = await stranger.post("/api/replay", json=body, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 401
    assert queue.dead_letters() == []


async def test_an_unreachable_server_is_shown_not_raised(server_factory: Any) -> None:
    server = server_factory()
    client = server.client(socket_timeout=1.0)
    data = DashboardData(client)
    server.stop()
    async with http(create_app(data)) as browser:
        page = await browser.get("/")
        state = await browser.get("/api/state")
    assert page.status_code == 503
    assert "cannot read the server" in page.text
    assert state.status_code == 503
    client.close()


def test_binding_beyond_loopback_needs_a_flag_and_a_token(
    capsys: pytest.CaptureFixture[str], valkey_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_PATTERNS_DASHBOARD_TOKEN", raising=False)
    check_bind("127.0.0.1", allow_remote=False, token=None)
    check_bind("::1", allow_remote=False, token=None)
    check_bind("localhost", allow_remote=False, token=None)
    check_bind("0.0.0.0", allow_remote=True, token="x" * 16)
    for host, allow, token in [
        ("0.0.0.0", False, None),
        ("0.0.0.0", True, None),
        ("0.0.0.0", False, "x" * 32),
        ("192.0.2.7", True, None),
        ("127.0.0.1", False, "short"),
    ]:
        with pytest.raises(ConfigurationError):
            check_bind(host, allow_remote=allow, token=token)
    code = main(["dashboard", "--url", valkey_server.url, "--host", "0.0.0.0", "--port", "1"])
    assert code == 2
    assert "--allow-remote and a token" in capsys.readouterr().err
