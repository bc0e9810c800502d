"""Stream queue fault scenarios (RELIABILITY 31, 33): worker processes SIGKILLed and SIGTERMed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_patterns import StreamQueue
from redis_patterns.testing.pytest_plugin import Backend

WORKER = Path(__file__).with_name("streams_worker_proc.py")
pytestmark = pytest.mark.fault


def _nodes(backend: Backend) -> str:
    if backend.is_cluster:
        return "cluster:" + ",".join(f"{h}:{p}" for h, p in backend.nodes)
    host, port = backend.nodes[0]
    return f"{host}:{port}"


class Procs:
    """Worker processes started by one test; every one is killed (by PID) at the end."""

    def __init__(self, backend: Backend, name: str, flavor: str) -> None:
        self.args = [_nodes(backend), name]
        self.flavor = flavor
        self.started: dict[str, subprocess.Popen[str]] = {}

    def start(
        self,
        consumer: str,
        *,
        claim_idle: float,
        batch: int,
        sleep: float,
        hang: int = 0,
        wait: bool = True,
        reap_idle: float | None = None,
    ) -> None:
        extra = [] if reap_idle is None else [str(reap_idle)]
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *self.args, consumer, self.flavor,
             str(claim_idle), str(batch), str(sleep), str(hang), *extra],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.started[consumer] = proc
        if wait:
            self.ready(consumer)

    def ready(self, consumer: str) -> None:
        stdout = self.started[consumer].stdout
        assert stdout is not None
        assert stdout.readline().strip() == "ready"

    def kill_all(self) -> None:
        for proc in self.started.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def procs(backend: Backend, prefix: str, request: pytest.FixtureRequest) -> Iterator[Procs]:
    made = Procs(backend, prefix, request.param)
    yield made
    made.kill_all()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("procs", ["sync", "async"], indirect=True)
def test_four_workers_one_sigkilled_mid_batch_nothing_lost(
    backend: Backend, prefix: str, procs: Procs, scale: Callable[[int, int], int]
) -> None:
    total = scale(2_000, 10_000)
    batch = 10
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    for start in range(0, total, 500):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 500, total)):
            pipe.xadd(queue.key, {"n": str(i)})
        if start == 0:
            queue.ensure_group()
        pipe.execute()
    kills = scale(1, 4)
    victims = [f"v{k}" for k in range(kills)]
    workers = ["w1", "w2", "w3"]
    # Each victim hangs inside its third batch after handling 25 entries (5 handled, not
    # acknowledged) and is SIGKILLed there; the three workers carry on and reclaim.
    for consumer in victims + workers:  # all at once: no one waits for the others to import
        hang = 25 if consumer in victims else 0
        procs.start(consumer, claim_idle=2.0, batch=batch, sleep=0.001, hang=hang, wait=False)
    for consumer in victims + workers:
        procs.ready(consumer)

    # Kill each victim as soon as it hangs, before the others reclaim its idle entries.
    held: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(held) < kills and time.monotonic() < deadline:
        for victim in victims:
            if victim not in held and int(client.get(f"{prefix}:count:{victim}") or 0) >= 25:
                held[victim] = queue.pending().consumers.get(victim, 0)
                os.kill(procs.started[victim].pid, signal.SIGKILL)
                procs.started[victim].wait(10)
        time.sleep(0.01)
    # Killed mid-batch: each victim's whole batch was pending, 5 of it handled.
    assert held == dict.fromkeys(victims, batch)

    wait_until(lambda: client.hlen(f"{prefix}:handled") >= total, 120, "every id handled")
    wait_until(lambda: queue.pending().count == 0, 30, "an empty pending list")
    for consumer in workers:
        os.kill(procs.started[consumer].pid, signal.SIGTERM)
    for consumer in workers:
        assert procs.started[consumer].wait(30) == 0

    counts = [int(v) for v in client.hvals(f"{prefix}:handled")]
    duplicates = sum(counts) - len(counts)
    ids = {entry[0] for entry in client.xrange(queue.key, "-", "+")}
    assert len(counts) == total == len(ids)
    assert {k for k in client.hkeys(f"{prefix}:handled")} == ids
    print(f"\n{total} entries, {kills} of {kills + 3} workers SIGKILLed: {duplicates} duplicates")
    assert duplicates <= batch * kills  # only the victims' unacknowledged batches run twice
    info = queue.info()
    assert (info.pending, info.lag, info.dead_letters) == (0, 0, 0)
    # Stopped workers left the group; killed ones are still listed (they held entries).
    assert {c.name for c in info.consumers} <= set(victims)


@pytest.mark.parametrize("procs", ["sync", "async"], indirect=True)
def test_sigterm_mid_batch_leaves_nothing_unreclaimable(
    backend: Backend, prefix: str, procs: Procs
) -> None:
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    for i in range(200):
        queue.add({"n": i})
    claim_idle = 30.0
    procs.start("solo", claim_idle=claim_idle, batch=50, sleep=0.01)
    wait_until(lambda: int(client.get(f"{prefix}:count:solo") or 0) >= 5, 60, "solo to work")
    proc = procs.started["solo"]
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stdout is not None
    report = proc.stdout.read()
    handled = int(client.get(f"{prefix}:count:solo"))
    assert client.hlen(f"{prefix}:handled") == handled
    pending = client.xpending_range(queue.key, "workers", "-", "+", 1000)
    # What was read but not handled was released: idle >= claim_idle, so claimable right now.
    assert all(p["time_since_delivered"] >= claim_idle * 1000 for p in pending), pending
    # The release took back the delivery that never reached the handler: the next claim is #1.
    assert all(p["times_delivered"] == 0 for p in pending)
    assert '"released":' in report
    if pending:
        assert [c.name for c in queue.info().consumers] == ["solo"]
    else:
        assert queue.info().consumers == ()  # it left the group: nothing held
    assert len(pending) + handled <= 200


@pytest.mark.parametrize("procs", ["sync", "async"], indirect=True)
def test_sigkilled_consumer_is_reaped_once_its_entries_were_reclaimed(
    backend: Backend, prefix: str, procs: Procs
) -> None:
    """RELIABILITY 33 with a real crash: the survivor reclaims, then reaps the dead name."""
    client: Any = backend.client()
    queue = StreamQueue(client, prefix)
    for i in range(30):
        queue.add({"n": i})
    procs.start("victim", claim_idle=0.5, batch=10, sleep=0.001, hang=5)
    wait_until(lambda: int(client.get(f"{prefix}:count:victim") or 0) >= 5, 60, "the victim")
    assert queue.pending().consumers == {"victim": 10}  # killed holding its whole batch
    os.kill(procs.started["victim"].pid, signal.SIGKILL)
    procs.started["victim"].wait(10)
    killed = time.monotonic()
    procs.start("survivor", claim_idle=0.5, batch=10, sleep=0.001, reap_idle=1.0)

    samples: list[dict[str, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        samples.append({c.name: c.pending for c in queue.info().consumers})
        if "victim" not in samples[-1]:
            break
        time.sleep(0.02)
    gone_after = time.monotonic() - killed
    assert "victim" not in samples[-1], samples[-5:]
    # Never deleted while it held entries: the last time it was seen, it held none.
    assert samples[-2]["victim"] == 0
    wait_until(lambda: client.hlen(f"{prefix}:handled") == 30, 30, "every entry handled")
    assert queue.pending().count == 0
    os.kill(procs.started["survivor"].pid, signal.SIGTERM)
    assert procs.started["survivor"].wait(30) == 0
    assert queue.info().consumers == ()  # the survivor left on SIGTERM
    print(f"\nthe SIGKILLed consumer left the group {gone_after:.2f} s after the kill")
