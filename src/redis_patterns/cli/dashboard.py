"""``redis-patterns dashboard``: a small live web page of queues, locks and leaderboards.

Server-rendered HTML (Starlette, no JavaScript build step): the page fetches its content again
every few seconds and offers Replay / Purge buttons for dead letters behind a confirmation.
Mutations are POSTs that must carry the page's CSRF value in a header (a cross-site form cannot
set one) and come through an allowed ``Host`` (DNS rebinding); with ``--token``, every request
must also carry the token. It binds to 127.0.0.1 and refuses other addresses unless asked
explicitly *and* given a token.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis

from .._errors import ConfigurationError, RedisPatternsError
from .._sync.streams import StreamQueue
from . import _admin

__all__ = ["DashboardData", "check_bind", "create_app", "run_dashboard"]

TOKEN_ENV = "REDIS_PATTERNS_DASHBOARD_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_QUEUES_SHOWN = 50
MAX_SERIES_SHOWN = 200
_COOKIE = "rp_dashboard_token"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, allow_remote: bool, token: str | None) -> None:
    """Refuse a non-loopback bind unless ``allow_remote`` and a token of 16+ characters.

    Raises:
        ConfigurationError: the bind is not allowed.
    """
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigurationError(f"the token must have at least {MIN_TOKEN_CHARS} characters")
    if _is_loopback(host):
        return
    if not allow_remote or token is None:
        raise ConfigurationError(
            f"refusing to listen on {host}: the dashboard can replay and delete data. Pass "
            f"--allow-remote and a token (--token or ${TOKEN_ENV}) to expose it beyond this "
            "machine"
        )


class DashboardData:
    """What the page shows, read from the server; key discovery (SCAN) is cached.

    Scanning walks the whole keyspace, so it runs at most every ``scan_every`` seconds; each
    refresh in between re-reads only the keys already found (one script per queue group).
    """

    def __init__(
        self,
        client: _admin.Client,
        *,
        scan_every: float = 10.0,
        top: int = 10,
        metrics_url: str | None = None,
    ) -> None:
        self.client = client
        self.scan_every = scan_every
        self.top = top
        self.metrics_url = metrics_url
        self._lock = threading.Lock()
        self._scanned_at: float | None = None
        self._queues: list[str] = []
        self._locks: list[bytes] = []
        self._boards: list[bytes] = []

    def _discover(self) -> tuple[list[str], list[bytes], list[bytes]]:
        with self._lock:
            now = time.monotonic()
            if self._scanned_at is None or now - self._scanned_at >= self.scan_every:
                self._queues = _admin.queue_names(self.client)
                self._locks = _admin.lock_keys(self.client)
                self._boards = _admin.board_keys(self.client)
                self._scanned_at = now
            return list(self._queues), list(self._locks), list(self._boards)

    def view(self) -> dict[str, Any]:
        """Everything the page shows, as plain data (also served as JSON at ``/api/state``)."""
        names, lock_keys, board_keys = self._discover()
        queues = []
        for name in names[:MAX_QUEUES_SHOWN]:
            groups = []
            snap = _admin.queue_snapshot(self.client, name, count=self.top)
            for group in snap.groups or (snap.group,):
                this = snap if group == snap.group else _admin.queue_snapshot(
                    self.client, name, group, count=self.top
                )  # fmt: skip
                groups.append(
                    {"group": group, "info": asdict(this.info),
                     "pending": [asdict(p) for p in this.pending]}
                )  # fmt: skip
            queues.append(
                {"name": name, "length": snap.info.length, "groups": groups,
                 "dead_letters": snap.info.dead_letters,
                 "dead": [asdict(d) for d in snap.dead]}
            )  # fmt: skip
        return {
            "queues": queues,
            "queues_not_shown": max(0, len(names) - MAX_QUEUES_SHOWN),
            "locks": [asdict(lock) for lock in _admin.read_locks(self.client, lock_keys)],
            "leaderboards": [
                asdict(b) for b in _admin.leaderboards(self.client, self.top, board_keys)
            ],
            "metrics": None if self.metrics_url is None else scrape_metrics(self.metrics_url),
        }

    def replay(self, queue: str, group: str, ids: list[str] | None) -> dict[str, Any]:
        result = StreamQueue(self.client, queue, group).replay_dead_letters(ids)
        return {"replayed": result.replayed, "missing": list(result.missing)}

    def purge(self, queue: str, group: str, ids: list[str] | None) -> dict[str, Any]:
        return {"purged": StreamQueue(self.client, queue, group).purge_dead_letters(ids)}


def scrape_metrics(url: str, timeout: float = 2.0) -> dict[str, Any]:
    """The ``redis_patterns_*`` series an app's Prometheus endpoint serves: ``{"url", "series":
    [{"name", "labels", "value"}], "error"}`` (counters' ``_total``, gauges, histograms'
    ``_count`` and ``_sum``; at most `MAX_SERIES_SHOWN`)."""
    import urllib.request

    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        error = "reading metrics needs prometheus_client: pip install 'redis-patterns[prometheus]'"
        return {"url": url, "series": [], "error": error}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # the operator's own URL
            text = reply.read().decode("utf-8", errors="replace")
        series = [
            {"name": sample.name, "labels": dict(sample.labels), "value": sample.value}
            for family in text_string_to_metric_families(text)
            if family.name.startswith("redis_patterns_")
            for sample in family.samples
            if not sample.name.endswith(("_created", "_bucket"))
        ]
    except (OSError, ValueError) as exc:
        return {"url": url, "series": [], "error": f"{type(exc).__name__}: {exc}"}
    return {"url": url, "series": series[:MAX_SERIES_SHOWN], "error": None}


# --- HTML ------------------------------------------------------------------------------------


def _e(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return html.escape(str(value), quote=True)


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _table(columns: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{empty}</p>'
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _button(action: str, queue: str, group: str, label: str, read_only: bool, ids: str = "") -> str:
    disabled = ' disabled title="read-only dashboard"' if read_only else ""
    return (
        f'<button class="{action}" data-action="{action}" data-queue="{_e(queue)}" '
        f'data-group="{_e(group)}" data-ids="{_e(ids)}"{disabled}>{label}</button>'
    )


def _queue_html(queue: dict[str, Any], read_only: bool) -> str:
    name = queue["name"]
    first_group = queue["groups"][0]["group"]
    parts = [f'<section class="queue" data-queue="{_e(name)}"><h3>{_e(name)}</h3>']
    summary = [
        [_e(g["group"]) + ("" if g["info"]["group_exists"] else " (none yet)"),
         _e(g["info"]["length"]), _e(g["info"]["lag"]), _e(g["info"]["pending"]),
         _e(len(g["info"]["consumers"])), _secs(g["info"]["oldest_pending_age"])]
        for g in queue["groups"]
    ]  # fmt: skip
    parts.append(
        _table(["group", "length", "lag", "pending", "consumers", "oldest pending"], summary, "")
    )
    for g in queue["groups"]:
        consumers = [
            [_e(c["name"]), _e(c["pending"]), _secs(c["idle"])] for c in g["info"]["consumers"]
        ]
        pending = [
            [_e(p["id"]), _e(p["consumer"]), _secs(p["idle"]), _e(p["deliveries"])]
            for p in g["pending"]
        ]
        parts.append(f"<h4>group {_e(g['group'])}: consumers</h4>")
        parts.append(_table(["consumer", "pending", "idle"], consumers, "no consumers"))
        parts.append(f"<h4>group {_e(g['group'])}: pending (oldest first)</h4>")
        parts.append(_table(["id", "consumer", "idle", "deliveries"], pending, "nothing pending"))
    parts.append(f"<h4>dead letters ({_e(queue['dead_letters'])})</h4>")
    dead = [
        [_e(d["id"]), _e(d["original_id"]), f'<code>{_e(d["data"])}</code>',
         f'<span class="error">{_e(d["error"])}</span>', _e(d["deliveries"]), _e(d["replays"]),
         _button("replay", name, first_group, "Replay", read_only, d["id"])
         + _button("purge", name, first_group, "Purge", read_only, d["id"])]
        for d in queue["dead"]
    ]  # fmt: skip
    parts.append(
        _table(["id", "original id", "data", "error", "deliveries", "replays", ""], dead,
               "no dead letters")
    )  # fmt: skip
    if queue["dead_letters"]:
        parts.append(
            '<p class="bulk">'
            + _button("replay", name, first_group, "Replay all", read_only)
            + _button("purge", name, first_group, "Purge all", read_only)
            + "</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def render_content(view: dict[str, Any], read_only: bool) -> str:
    """The refreshing part of the page."""
    parts = ['<h2 id="queues">Stream queues</h2>']
    if not view["queues"]:
        parts.append('<p class="empty">no stream queues found</p>')
    parts += [_queue_html(q, read_only) for q in view["queues"]]
    if view["queues_not_shown"]:
        parts.append(f'<p class="empty">{view["queues_not_shown"]} more queue(s) not shown</p>')
    parts.append('<h2 id="locks">Held locks</h2>')
    locks = [
        [_e(lock["name"]), _secs(lock["ttl"]) if lock["ttl"] is not None else "no TTL!",
         _e(lock["fence"])]
        for lock in view["locks"]
    ]  # fmt: skip
    parts.append(_table(["lock", "ttl", "fence"], locks, "no locks held"))
    parts.append('<h2 id="leaderboards">Leaderboards</h2>')
    if not view["leaderboards"]:
        parts.append('<p class="empty">no leaderboards found</p>')
    for board in view["leaderboards"]:
        title = board["name"] + (f" ({board['period']})" if board["period"] else "")
        rows = [
            [str(rank), _e(member), _e(int(score) if float(score).is_integer() else score)]
            for rank, (member, score) in enumerate(board["top"], 1)
        ]
        parts.append(f"<h3>{_e(title)} <small>{board['members']} members</small></h3>")
        parts.append(_table(["rank", "member", "score"], rows, "empty"))
    parts.append('<h2 id="metrics">Metrics</h2>')
    scraped = view["metrics"]
    if scraped is None:
        parts.append(
            '<p class="empty">No metrics source: start the dashboard with --metrics-url and '
            "the address of your app's Prometheus endpoint (see metrics.use_prometheus) to "
            "show its redis_patterns_* series here.</p>"
        )
    else:
        parts.append(f"<p>from {_e(scraped['url'])}</p>")
        if scraped["error"]:
            parts.append(f'<p class="error">cannot read it: {_e(scraped["error"])}</p>')
        rows = [
            [_e(m["name"]), _e(", ".join(f"{k}={v}" for k, v in sorted(m["labels"].items()))),
             _e(f"{m['value']:g}")]
            for m in scraped["series"]
        ]  # fmt: skip
        parts.append(_table(["metric", "labels", "value"], rows, "no redis_patterns_* series yet"))
    return "".join(parts)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 2em 2em; color: #222; }
header { display: flex; gap: 1em; align-items: baseline; border-bottom: 1px solid #ccc; }
header .status { color: #666; margin-left: auto; }
header .ro { color: #a60; font-weight: bold; }
table { border-collapse: collapse; margin: .3em 0 1em; }
th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top;
         white-space: nowrap; }
td code, td .error { white-space: normal; }
th { background: #f3f3f3; }
section.queue { border: 1px solid #ccc; border-radius: 6px; padding: 0 1em; margin: 1em 0; }
.error { color: #b00; }
.empty { color: #888; }
code { font-size: 12px; }
button { margin-right: .3em; }
button.purge { color: #b00; }
#message { color: #060; min-height: 1.4em; }
"""

_SCRIPT = """
const REFRESH_MS = %(refresh_ms)d;
const CSRF = %(csrf)s;
async function refresh() {
  try {
    const response = await fetch("partial", {cache: "no-store"});
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    document.getElementById("content").innerHTML = await response.text();
    document.getElementById("status").textContent =
      "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    document.getElementById("status").textContent = "refresh failed: " + error.message;
  }
}
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.disabled) return;
  const {action, queue, group, ids} = button.dataset;
  const what = ids ? "dead letter " + ids : "ALL dead letters";
  const verb = action === "replay" ? "Replay" : "Delete for good";
  if (!confirm(verb + " " + what + " of queue " + queue + "?")) return;
  const response = await fetch("api/" + action, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
    body: JSON.stringify({queue, group, ids: ids ? [ids] : null}),
  });
  const result = await response.json();
  document.getElementById("message").textContent = response.ok
    ? (action === "replay"
        ? "replayed " + Object.keys(result.replayed).length + " dead letter(s)"
        : "purged " + result.purged + " dead letter(s)")
    : "failed: " + (result.error || response.status);
  await refresh();
});
setInterval(refresh, REFRESH_MS);
"""


def render_page(content: str, *, read_only: bool, csrf: str, refresh: float, server: str) -> str:
    mode = '<span class="ro">read-only</span>' if read_only else ""
    script = _SCRIPT % {"refresh_ms": int(refresh * 1000), "csrf": json.dumps(csrf)}
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>redis-patterns dashboard</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>redis-patterns</h1><span>{_e(server)}</span>{mode}"
        '<nav><a href="#queues">queues</a> · <a href="#locks">locks</a> · '
        '<a href="#leaderboards">leaderboards</a> · <a href="#metrics">metrics</a></nav>'
        '<span class="status" id="status">live</span></header>'
        '<p id="message"></p>'
        f'<main id="content">{content}</main>'
        f"<script>{script}</script></body></html>"
    )


# --- the app ---------------------------------------------------------------------------------


def create_app(
    data: DashboardData,
    *,
    read_only: bool = False,
    token: str | None = None,
    refresh: float = 2.0,
    allowed_hosts: list[str] | None = None,
    server: str = "",
) -> Any:
    """The Starlette app serving ``data``.

    Args:
        data: where the page's content comes from.
        read_only: refuse every mutation (and show the buttons disabled).
        token: when set, every request must carry it: ``?token=...`` once (then a cookie),
            or an ``Authorization: Bearer ...`` header.
        refresh: seconds between two refreshes of the page.
        allowed_hosts: ``Host`` header values accepted (default: loopback names only).
        server: what the page's title line says it shows (never include a password).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    csrf = secrets.token_urlsafe(24)

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        offered = request.cookies.get(_COOKIE) or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            offered = header[7:]
        return hmac.compare_digest(offered.encode(), token.encode())

    def denied() -> Response:
        return JSONResponse({"error": "a token is required"}, status_code=401)

    async def safe_view() -> tuple[str, int]:
        try:
            view = await run_in_threadpool(data.view)
        except (redis.RedisError, RedisPatternsError) as exc:
            return f'<p class="error">cannot read the server: {_e(exc)}</p>', 503
        return render_content(view, read_only), 200

    async def page(request: Request) -> Response:
        if token is not None and "token" in request.query_params:
            offered = request.query_params["token"]
            if not hmac.compare_digest(offered.encode(), token.encode()):
                return denied()
            # Move the token out of the address bar (and of history) into a strict cookie.
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(_COOKIE, token, httponly=True, samesite="strict")
            return response
        if not authorized(request):
            return denied()
        content, status = await safe_view()
        body = render_page(content, read_only=read_only, csrf=csrf, refresh=refresh, server=server)
        return HTMLResponse(body, status_code=status, headers=_NO_STORE)

    async def partial(request: Request) -> Response:
        if not authorized(request):
            return denied()
        content, status = await safe_view()
        return HTMLResponse(content, status_code=status, headers=_NO_STORE)

    async def state(request: Request) -> Response:
        if not authorized(request):
            return denied()
        try:
            view = await run_in_threadpool(data.view)
        except (redis.RedisError, RedisPatternsError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(view, headers=_NO_STORE)

    def mutation(verb: Callable[[str, str, list[str] | None], dict[str, Any]]) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return denied()
            if read_only:
                return JSONResponse({"error": "the dashboard is read-only"}, status_code=403)
            offered = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(offered.encode(), csrf.encode()):
                return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
            try:
                body = await request.json()
                queue, group = str(body["queue"]), str(body.get("group") or "workers")
                ids = body.get("ids")
                if ids is not None and not isinstance(ids, list):
                    raise ConfigurationError("ids must be a list of entry ids or null")
                result = await run_in_threadpool(verb, queue, group, ids)
            except (ConfigurationError, KeyError, ValueError) as exc:
                return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
            except (redis.RedisError, RedisPatternsError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=503)
            return JSONResponse(result)

        return endpoint

    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"]
    return Starlette(
        routes=[
            Route("/", page),
            Route("/partial", partial),
            Route("/api/state", state),
            Route("/api/replay", mutation(data.replay), methods=["POST"]),
            Route("/api/purge", mutation(data.purge), methods=["POST"]),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
    )


_NO_STORE = {"Cache-Control": "no-store"}


def _server_label(url: str) -> str:
    """``host:port`` of ``url``, without the user name or password it may carry."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or parts.path}:{parts.port or 6379}"


def run_dashboard(
    *,
    url: str,
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
    allow_remote: bool,
    refresh: float,
    scan_every: float,
    metrics_url: str | None = None,
) -> int:
    """Serve the dashboard until interrupted; exit status 2 on a refused bind or bad server."""
    prog = "redis-patterns dashboard"
    token = token or os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(host, allow_remote=allow_remote, token=token)
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    try:
        import uvicorn
    except ImportError:
        print(f"{prog}: needs uvicorn and starlette: pip install 'redis-patterns[dashboard]'",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        client = _admin.open_client(url)
    except (redis.RedisError, ValueError) as exc:
        print(f"{prog}: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    hosts = None if _is_loopback(host) else ["*"]  # remote: the token is the guard
    app = create_app(
        DashboardData(client, scan_every=scan_every, metrics_url=metrics_url),
        read_only=read_only,
        token=token,
        refresh=refresh,
        allowed_hosts=hosts,
        server=_server_label(url),
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard for {url} at http://{shown}:{port}/" + (" (read-only)" if read_only else ""),
          flush=True)  # fmt: skip
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        client.close()
    return 0
