"""WriteBehind with SQLite as the real database: coalescing, dead letters, a flusher SIGKILLed
mid-batch and replaced without losing a write (scenario 19)."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from redis_patterns import (
    AsyncCache,
    AsyncWriteBehind,
    BackendError,
    Cache,
    ConfigurationError,
    EmbeddedServer,
    PendingWrite,
    WriteBehind,
)
from redis_patterns.testing.pytest_plugin import Backend

WORKER = Path(__file__).with_name("write_behind_worker.py")


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds passed (a bounded wait)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_write_goes_to_cache_now_and_coalesces(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    batches: list[list[PendingWrite]] = []
    behind = WriteBehind(cache, batches.append, batch_size=100, interval=0)
    for i in range(30):
        behind.write(f"k{i % 3}", i)
    assert cache.get("k2") == 29  # readable at once
    assert behind.pending() == 30
    result = behind.flush_once("f1")
    assert (result.read, result.flushed, result.dead) == (30, 3, 0)
    assert sorted((w.key, w.value, w.superseded) for w in batches[0]) == [
        ("k0", 27, 9),
        ("k1", 28, 9),
        ("k2", 29, 9),
    ]
    versions = [w.version for w in batches[0]]
    assert versions == sorted(versions)
    assert behind.pending() == 0
    assert behind.flush_once("f1").read == 0


def test_one_command_per_write(backend: Backend, prefix: str) -> None:
    cache = Cache(backend.client(), prefix, 60)
    behind = WriteBehind(cache, lambda batch: None)
    behind.write("k", 0)
    with backend.counter() as seen:
        behind.write("k", 1)
    # One script on a standalone server; on a cluster the stream and the entry live in
    # different slots: the stream entry, then the cache (documented). The counter lists
    # commands per node, so across nodes only the multiset is meaningful.
    assert sorted(seen.names) == (["EVALSHA", "XADD"] if backend.is_cluster else ["EVALSHA"])


def test_failing_flush_is_retried_then_dead_lettered(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    cache = Cache(client, prefix, 60)
    calls: list[int] = []

    def broken(batch: list[PendingWrite]) -> None:
        calls.append(len(batch))
        raise RuntimeError("db down")

    behind = WriteBehind(cache, broken, claim_idle=0.001, max_attempts=3, interval=0)
    behind.write("k", "v")
    for _ in range(10):
        result = behind.flush_once("f1")
        if result.dead:
            break
        time.sleep(0.01)
    assert result.dead == 1
    assert calls == [1, 1, 1]  # max_attempts deliveries, then the dead letters
    dead = client.xrange(behind._core.dead_stream)
    assert len(dead) == 1
    assert dead[0][1][b"k"] == b"k"
    assert b"undeliverable" in dead[0][1][b"error"]
    assert behind.pending() == 0


def test_bad_arguments_before_any_io(backend: Backend, prefix: str) -> None:
    client = backend.client()
    cache = Cache(client, prefix, 60)
    client.ping()
    with backend.counter() as seen:
        bad: list[dict[str, Any]] = [{"batch_size": 0}, {"max_attempts": 0}, {"claim_idle": 0}]
        for kwargs in bad:
            with pytest.raises(ConfigurationError):
                WriteBehind(cache, lambda b: None, **kwargs)
        with pytest.raises(ConfigurationError):
            WriteBehind(cache, "not callable")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="set"):
            WriteBehind(cache, lambda b: None).write("k", {1})
    assert seen.count == 0


async def test_async_write_behind(backend: Backend, prefix: str) -> None:
    client = backend.async_client()
    cache = AsyncCache(client, prefix, 60)
    seen: list[PendingWrite] = []

    async def flush(batch: list[PendingWrite]) -> None:
        seen.extend(batch)

    behind = AsyncWriteBehind(cache, flush, interval=0)
    for i in range(5):
        await behind.write("k", i)
    await behind.run("f1", max_cycles=2)
    assert [(w.key, w.value) for w in seen] == [("k", 4)]
    assert await behind.pending() == 0
    await client.aclose()


def _db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER, version INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS counters (db_writes INTEGER)")
        db.execute("INSERT INTO counters VALUES (0)")
    return db


def _flusher(
    backend: Backend, namespace: str, db: Path, consumer: str, stall: int
) -> subprocess.Popen[str]:
    kind = "cluster" if backend.is_cluster else "standalone"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            kind,
            str(backend.nodes[0][1]),
            namespace,
            str(db),
            consumer,
            "0.5",
            "500",
            str(stall),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.fault
def test_flusher_killed_mid_batch_loses_nothing(
    backend: Backend, prefix: str, tmp_path: Path, scale: Callable[[int, int], int]
) -> None:
    writes, keys = scale(2000, 10_000), scale(200, 1000)
    path = tmp_path / "db.sqlite"
    db = _db(path)
    client = backend.client()
    cache = Cache(client, prefix, 600)
    behind = WriteBehind(cache, lambda batch: None)  # this process only writes
    expected: dict[str, int] = {}
    rng = random.Random(5)
    first = _flusher(backend, prefix, path, "flusher-a", stall=120)
    half = threading.Event()

    def writer() -> None:
        for i in range(writes):
            key = f"k{rng.randrange(keys)}"
            behind.write(key, i)
            expected[key] = i
            if i == writes // 2:
                half.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "stalled"  # mid-batch, some rows written
    assert half.wait(60)
    pending_a = {
        c["name"]: c["pending"]
        for c in client.xpending(behind._core.stream, "flushers")["consumers"]
    }
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    first.stdout.close()
    assert pending_a.get(b"flusher-a", 0) > 0  # it died holding unacknowledged entries
    second = _flusher(backend, prefix, path, "flusher-b", stall=0)
    thread.join(timeout=120)
    assert not thread.is_alive()
    deadline = time.monotonic() + 120
    while behind.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert behind.pending() == 0
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    assert second.stdout is not None
    second.stdout.close()
    table = dict(db.execute("SELECT k, v FROM kv").fetchall())
    (db_writes,) = db.execute("SELECT db_writes FROM counters").fetchone()
    db.close()
    assert table == expected  # the last value of every key, nothing lost
    assert db_writes < writes
    print(
        f"write-behind: {writes} cache writes over {keys} keys -> {db_writes} database writes "
        f"(coalescing ratio {writes / db_writes:.1f}x), flusher killed mid-batch holding "
        f"{pending_a[b'flusher-a']} entries"
    )


@pytest.mark.fault
@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_redis_killed_after_acknowledged_writes(
    prefix: str, fsync: Any, scale: Callable[[int, int], int]
) -> None:
    """Scenario 19, second half: SIGKILL redis-server itself after the writes were acknowledged.

    With `appendfsync always` every acknowledged write survives (the AOF is written before the
    reply). With `everysec` the server may postpone writing the AOF for up to 2 s while a
    background fsync is slow, and still reply: a SIGKILL then loses the writes of the last
    ~2 s. What survives is always a prefix of what was written (the AOF is a log), and writes
    acknowledged more than 3 s before the kill always survive."""
    writes, keys = scale(1000, 10_000), 100
    early = writes // 2
    with EmbeddedServer(appendonly=True, appendfsync=fsync) as server:
        client = server.client()
        behind = WriteBehind(Cache(client, prefix, 600), lambda batch: None)
        values = [(f"k{i % keys}", i) for i in range(writes)]
        for key, value in values[:early]:
            behind.write(key, value)
        time.sleep(3.0)  # past the longest AOF write postponement (2 s) of everysec
        for key, value in values[early:]:
            behind.write(key, value)
        client.close()
        server.restart()  # SIGKILL, then start on the same data
        client = server.client()
        flushed: dict[str, int] = {}

        def flush(batch: list[PendingWrite]) -> None:
            flushed.update((w.key, w.value) for w in batch)

        after = WriteBehind(Cache(client, prefix, 600), flush, batch_size=1000, interval=0)
        survived = after.pending()
        if fsync == "always":
            assert survived == writes  # nothing acknowledged was lost
        else:
            assert early <= survived <= writes, survived
        after.run("flusher", max_cycles=writes // 1000 + 2)
        assert flushed == dict(values[:survived])  # a prefix of the writes, latest per key
        client.close()


@pytest.mark.fault
def test_run_rides_out_a_server_restart_and_loading(
    server_factory: Callable[..., EmbeddedServer],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 13.8): `run()` raised out of its loop when the server restarted. It
    must ride out the refused connections and the ``LOADING`` replies of a restart (made long
    by ``key-load-delay`` over filler keys in the AOF base) with backoff, and flush every
    acknowledged write afterwards: the database ends with the last value of every key."""
    server = server_factory(
        appendonly=True,
        appendfsync="always",  # an acknowledged write survives SIGKILL
        config={"key-load-delay": 50, "loading-process-events-interval-bytes": 1024},
    )
    admin = server.client(socket_timeout=5)
    admin.execute_command("DEBUG", "POPULATE", 20_000, f"{prefix}:filler")
    admin.bgrewriteaof()  # the fillers go into the AOF's RDB base: loading them is slow
    deadline = time.monotonic() + 60
    while (
        admin.info("persistence")["aof_rewrite_in_progress"]
        or admin.info("persistence")["aof_rewrite_scheduled"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    def client() -> Any:
        return server.client(socket_timeout=2, retry=Retry(NoBackoff(), 0))

    database: dict[str, tuple[int, int]] = {}  # key -> (version, value), newest version wins

    def flush(batch: list[PendingWrite]) -> None:
        for w in batch:
            if w.key not in database or database[w.key][0] < w.version:
                database[w.key] = (w.version, w.value)

    flusher = WriteBehind(Cache(client(), prefix, 600), flush, interval=0.02, claim_idle=0.5)
    writer = WriteBehind(Cache(client(), prefix, 600), lambda batch: None)
    raised: list[BaseException] = []

    def run_flusher() -> None:
        try:
            flusher.run("flusher")
        except BaseException as exc:  # the bug: run() raised out of its loop
            raised.append(exc)

    acknowledged: dict[str, int] = {}
    restarted = threading.Event()
    after_restart = [0]
    stop_writing = threading.Event()

    def write_forever() -> None:
        i = 0
        while not stop_writing.is_set():
            key = f"k{i % 20}"
            try:
                writer.write(key, i)  # retried with the same value until acknowledged
            except BackendError:
                time.sleep(0.01)
                continue
            acknowledged[key] = i
            after_restart[0] += restarted.is_set()
            i += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=run_flusher), threading.Thread(target=write_forever)]
    for thread in threads:
        thread.start()
    try:
        assert _wait(lambda: len(database) == 20, 30)  # flushing before the restart
        with caplog.at_level(logging.WARNING, logger="redis_patterns"):
            server.restart()  # SIGKILL; returns once the server answers PING (loaded)
            restarted.set()
            assert _wait(lambda: after_restart[0] >= 200, 60)  # writes continue after it
            stop_writing.set()
            threads[1].join(30)
            assert _wait(lambda: admin.xlen(flusher._core.stream) == 0, 60)
    finally:
        stop_writing.set()
        flusher.stop()
        for thread in threads:
            thread.join(30)
    assert raised == []
    assert not threads[0].is_alive()
    assert {k: v for k, (_, v) in database.items()} == acknowledged
    ridden = [r.getMessage() for r in caplog.records if "write-behind flusher" in r.getMessage()]
    assert any("loading the dataset" in m for m in ridden), ridden  # LOADING was ridden out
    # Each kind of error is logged once, then counted (bounded logging), not once per retry.
    assert flusher.stats["backend_errors"] >= len(ridden)


def test_hostile_stream_entries_go_to_the_dead_letters(backend: Backend, prefix: str) -> None:
    client: Any = backend.client()
    cache = Cache(client, prefix, 60)
    flushed: list[PendingWrite] = []
    behind = WriteBehind(cache, flushed.extend, interval=0)
    behind.write("good", 1)
    stream = behind._core.stream
    client.xadd(stream, {"k": "no-payload", "f": "json"})
    client.xadd(stream, {"k": "pickled", "f": "pickle", "p": b"\x80\x04K\x01."})
    client.xadd(stream, {"k": "broken", "f": "json", "p": b"{not json"})
    client.xadd(stream, {"k": "a{b}", "f": "json", "p": b"1"})
    result = behind.flush_once("f1")
    assert (result.read, result.flushed, result.dead) == (5, 1, 4)
    assert [(w.key, w.value) for w in flushed] == [("good", 1)]
    assert client.xlen(behind._core.dead_stream) == 4
    assert behind.pending() == 0
