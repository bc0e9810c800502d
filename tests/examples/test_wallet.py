"""The wallet transfer two ways under concurrency: money conserved, never negative, counted."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from redis_patterns.testing.pytest_plugin import Backend

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (``examples/`` is not on the test path)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


by_watch = load_example("wallet_transaction")
by_script = load_example("wallet_script")

WALLETS = 10
START = 100


def _names(prefix: str) -> list[str]:
    return [f"{prefix}-w{i}" for i in range(WALLETS)]


def _keys(prefix: str) -> list[str]:
    return [by_watch.wallet(n) for n in _names(prefix)]


def _setup(client: Any, prefix: str) -> None:
    client.mset(dict.fromkeys(_keys(prefix), START))


def _snapshot(client: Any, prefix: str) -> list[int]:
    # MGET is atomic: a snapshot taken mid-run must also show the total conserved.
    return [int(v or 0) for v in client.mget(_keys(prefix))]


def _watch_snapshots(
    backend: Backend, prefix: str, stop: threading.Event, bad: list[list[int]]
) -> threading.Thread:
    def run() -> None:
        client = backend.client()
        for _ in range(100_000):
            if stop.is_set():
                return
            balances = _snapshot(client, prefix)
            if sum(balances) != WALLETS * START or min(balances) < 0:
                bad.append(balances)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("version", ["watch", "script"])
def test_twenty_threads_conserve_money(
    backend: Backend, prefix: str, scale: Callable[[int, int], int], version: str
) -> None:
    threads, total = 20, scale(1000, 1000)
    names = _names(prefix)
    _setup(backend.client(), prefix)
    moved, refused, conflicts = [0], [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(threads)
    stop = threading.Event()
    bad: list[list[int]] = []
    watcher = _watch_snapshots(backend, prefix, stop, bad)

    def work(seed: int) -> None:
        client = backend.client()
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(total // threads):
            source, target = rng.sample(names, 2)
            amount = rng.randint(1, 60)
            if version == "watch":
                result = by_watch.transfer(client, source, target, amount)
                ok, retried = result.value, result.conflicts
            else:
                balance = by_script.transfer(client, source, target, amount)
                assert balance is None or balance >= 0
                ok, retried = balance is not None, 0
            with lock:
                moved[0] += ok
                refused[0] += not ok
                conflicts[0] += retried

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    stop.set()
    watcher.join(30)
    balances = _snapshot(backend.client(), prefix)
    assert sum(balances) == WALLETS * START
    assert min(balances) >= 0
    assert bad == []
    assert moved[0] + refused[0] == total
    assert moved[0] > 0
    assert refused[0] > 0  # amounts up to 60 on balances near 100: refusals do happen
    if version == "watch":
        assert conflicts[0] > 0  # 20 threads on 10 wallets collide; each retry is reported


@pytest.mark.parametrize("version", ["watch", "script"])
async def test_hundred_tasks_conserve_money(
    backend: Backend, prefix: str, scale: Callable[[int, int], int], version: str
) -> None:
    tasks, total = 100, scale(1000, 1000)
    names = _names(prefix)
    _setup(backend.client(), prefix)
    client = backend.async_client()
    await client.ping()  # redis-py's async cluster client initializes on first use: not racing
    outcomes: list[tuple[bool, int]] = []

    async def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(total // tasks):
            source, target = rng.sample(names, 2)
            amount = rng.randint(1, 60)
            if version == "watch":
                result = await by_watch.transfer_async(client, source, target, amount)
                outcomes.append((result.value, result.conflicts))
            else:
                balance = await by_script.transfer_async(client, source, target, amount)
                assert balance is None or balance >= 0
                outcomes.append((balance is not None, 0))

    await asyncio.gather(*(work(i) for i in range(tasks)))
    await client.aclose()
    balances = _snapshot(backend.client(), prefix)
    assert sum(balances) == WALLETS * START
    assert min(balances) >= 0
    assert len(outcomes) == total
    assert any(ok for ok, _ in outcomes)
    if version == "watch":
        assert sum(c for _, c in outcomes) > 0


def test_script_transfer_is_one_command(backend: Backend, prefix: str) -> None:
    client = backend.client()
    a, b = _names(prefix)[:2]
    client.set(by_script.wallet(a), 50)
    by_script.transfer(client, a, b, 1)  # cache the script
    with backend.counter() as seen:
        assert by_script.transfer(client, a, b, 10) == 39
    assert seen.names == ["EVALSHA"]
    with backend.counter() as seen:
        assert by_script.transfer(client, a, b, 1000) is None  # refused, still one command
    assert seen.names == ["EVALSHA"]


def test_watch_transfer_commands(backend: Backend, prefix: str) -> None:
    client = backend.client()
    a, b = _names(prefix)[:2]
    client.set(by_watch.wallet(a), 50)
    by_watch.transfer(client, a, b, 1)
    with backend.counter() as seen:
        assert by_watch.transfer(client, a, b, 10).value is True
    assert seen.names == ["WATCH", "GET", "MULTI", "DECRBY", "INCRBY", "EXEC"]
    with backend.counter() as seen:
        assert by_watch.transfer(client, a, b, 1000).value is False
    assert seen.names[:2] == ["WATCH", "GET"]
    assert "EXEC" not in seen.names


@pytest.mark.parametrize("module", [by_watch, by_script], ids=["watch", "script"])
def test_transfers_refuse_bad_amounts_before_io(backend: Backend, module: Any) -> None:
    client = backend.client()
    client.ping()
    with backend.counter() as seen:
        for amount in (0, -5, 1.5, True):
            with pytest.raises(ValueError, match="amount"):
                module.transfer(client, "a", "b", amount)
        with pytest.raises(ValueError, match="differ"):
            module.transfer(client, "a", "a", 1)
    assert seen.count == 0
