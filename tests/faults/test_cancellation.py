"""Scenario 39 (CVE-2023-28858/9): cancelled asyncio calls never hand a reply to the wrong caller.

Many tasks share one async client (one pool) through a proxy adding latency, so a cancellation
often lands after a request was sent and before its reply arrived. A connection returned to
the pool with that reply unread would give it to the next caller: each task GETs a key holding
its own unique value, so any mix-up shows.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

import pytest

import redis_patterns
from redis_patterns import EmbeddedServer, Script
from redis_patterns.testing import FaultProxy

pytestmark = pytest.mark.fault

GET_SCRIPT = Script("return redis.call('GET', KEYS[1])", name="get_own_value")
ONE_WAY = 0.05  # both directions: a round trip takes ~100 ms longer


async def test_cancelled_calls_never_get_someone_elses_reply(
    valkey_server: EmbeddedServer,
    fault_proxy: Callable[..., FaultProxy],
    scale: Callable[[int, int], int],
    prefix: str,
) -> None:
    tasks_per_round = scale(60, 200)
    rounds = scale(5, 50)
    rng = random.Random(39)
    keys = [f"{prefix}:k{i}" for i in range(tasks_per_round)]
    values = {key: f"{key}={uuid.uuid4().hex}".encode() for key in keys}
    with valkey_server.client() as direct:
        direct.mset(values)
        direct.script_load(GET_SCRIPT.source)

    proxy = fault_proxy(valkey_server, seed=39)
    proxy.latency(ONE_WAY, jitter=ONE_WAY / 2)
    client = redis_patterns.connect(
        proxy.url, asyncio=True, socket_timeout=30, max_connections=4 * tasks_per_round
    )

    async def own_value(i: int) -> bytes:
        key = keys[i]
        reply: object
        if i % 2:
            reply = await GET_SCRIPT(client, [key])  # EVALSHA through the runner
        else:
            reply = await client.get(key)
        assert isinstance(reply, bytes)
        return reply

    completed = cancelled = wrong = 0
    loop = asyncio.get_running_loop()
    try:
        for round_number in range(rounds + 1):
            last = round_number == rounds  # a final round without cancels reuses every connection
            tasks = [asyncio.ensure_future(own_value(i)) for i in range(tasks_per_round)]
            if not last:
                for task in tasks:
                    if rng.random() < 0.4:  # cancel before, during or after the round trip
                        loop.call_later(rng.uniform(0, 4 * ONE_WAY), task.cancel)
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=120
            )
            for i, result in enumerate(results):
                if isinstance(result, asyncio.CancelledError):
                    assert not last
                    cancelled += 1
                elif isinstance(result, BaseException):
                    raise result
                else:
                    completed += 1
                    wrong += result != values[keys[i]]
    finally:
        await client.aclose()
        proxy.pass_through()
    assert wrong == 0
    assert cancelled > 0  # the run really cancelled calls mid-flight ...
    assert completed >= tasks_per_round  # ... and many completed, the last round entirely
