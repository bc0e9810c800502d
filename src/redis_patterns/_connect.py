"""`connect()`: a client for ``url``, else ``$REDIS_URL``, else a private embedded server."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from typing import Any, Literal, overload

import redis
import redis.asyncio

from ._clients import safe_options
from ._embedded import EmbeddedServer

__all__ = ["connect"]

log = logging.getLogger("redis_patterns")

_default_server: EmbeddedServer | None = None
_default_lock = threading.Lock()
_warned_worker = False
_forked_from: int | None = None


def _note_fork() -> None:
    global _forked_from
    _forked_from = os.getppid()


# Only a fork after this module was imported is seen here (gunicorn --preload, multiprocessing's
# fork start method); `_worker_hint` covers the workers that import it afresh.
os.register_at_fork(after_in_child=_note_fork)


def _worker_hint() -> str | None:
    """Why this process looks like one of several workers of one app (None: it does not).

    The heuristics: it was forked from a process that had imported redis_patterns; it was started
    by ``multiprocessing`` (uvicorn's and hypercorn's ``--workers``, process pools, with either
    start method); or gunicorn's arbiter is loaded (a gunicorn worker, or its master with
    ``--preload``).
    """
    if _forked_from is not None:
        return f"it was forked from process {_forked_from}"
    parent = multiprocessing.parent_process()
    if parent is not None:
        return f"multiprocessing started it from process {parent.pid}"
    if "gunicorn.arbiter" in sys.modules:
        return "it runs under gunicorn"
    return None


def _default_url() -> str:
    global _default_server, _warned_worker
    with _default_lock:
        if _default_server is None or not _default_server.running:
            _default_server = EmbeddedServer().start()
            hint = None if _warned_worker else _worker_hint()
            if hint is not None:
                _warned_worker = True
                log.warning(
                    "REDIS_URL is not set, so connect() started an embedded server private to "
                    "process %d (%s), which looks like one of several workers (%s): each worker "
                    "gets a server of its own, so rate limits, locks and sessions are not "
                    "shared between them. Set REDIS_URL to one server for all workers.",
                    os.getpid(),
                    _default_server.url,
                    hint,
                )
        return _default_server.url


@overload
def connect(
    url: str | None = None, *, asyncio: Literal[False] = False, **kwargs: Any
) -> redis.Redis: ...


@overload
def connect(
    url: str | None = None, *, asyncio: Literal[True], **kwargs: Any
) -> redis.asyncio.Redis: ...


def connect(
    url: str | None = None, *, asyncio: bool = False, **kwargs: Any
) -> redis.Redis | redis.asyncio.Redis:
    """A redis-py client for ``url``, else ``$REDIS_URL``, else an embedded server.

    The embedded server is started on first use and stopped at interpreter exit; it is private
    to this process (a warning is logged when the process looks like one of several workers).

    The client is made for a web app, and any of these can be overridden by keyword:

    - ``socket_timeout=3.0``: a stalled server fails a call within
      seconds (``BackendTimeoutError``), so a rate limiter's ``fail_open`` engages;
    - ``socket_connect_timeout=2.0``;
    - ``retry=Retry(NoBackoff(), 0)``: a command is not re-sent after a connection error or a
      timeout. The outcome of such a command is unknown, and re-sending a limiter hit or an
      increment could apply it twice (the library raises `BackendUnavailableError` /
      `BackendTimeoutError` instead).
    """
    target = url or os.environ.get("REDIS_URL") or _default_url()
    options = safe_options(kwargs, asyncio=asyncio, cluster=False)
    if asyncio:
        return redis.asyncio.Redis.from_url(target, **options)
    return redis.Redis.from_url(target, **options)
