"""Auto-pipelining for asyncio clients: the commands concurrent tasks send in one turn of the
event loop go out as one pipeline, each reply back to its task (see `Batcher`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.exceptions as rex

__all__ = ["BLOCKING", "Batcher", "batcher_of", "gather_batched"]

_ATTRIBUTE = "_redis_patterns_batcher"
# Commands that hold their connection until something happens: pipelined with other tasks'
# commands they would hold every reply behind them back, so they always go out on their own.
BLOCKING = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
        "XREAD",
        "XREADGROUP",
    }
)


class Batcher:
    """An asyncio client's auto-pipeline: the commands its tasks issue in one turn of the event
    loop go out together, as one pipeline, and each reply goes back to the task that asked.

    The first command of a turn makes its task the batch's sender: it yields one turn
    (``sleep(0)``), so every task that was ready in this turn adds its command, then takes the
    batch. Alone, it sends its command itself, one ``execute_command`` exactly as without
    batching (a lone caller pays one loop turn, no task). With company, the pipeline
    (``transaction=False``) runs in a task of its own, so no caller's cancellation can break
    it for the others: a command cancelled before the batch is taken is left out, a reply
    whose caller stopped waiting is dropped. Nothing is ever re-sent here: a pipeline that
    fails (a lost connection, a timeout) fails every command in it with that error (outcome
    unknown), which the steps map like any other.
    """

    __slots__ = ("_loop", "_pending", "_sending", "client", "enabled")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.enabled = True
        # This turn's batch (None: no sender is waiting); the sender's own entry has no future.
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of that batch
        self._sending: set[asyncio.Task[None]] = set()  # strong references while they run

    async def execute_command(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._pending is not None and self._loop is loop:  # a sender waits: ride along
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((args, future))
            return await future
        # (A batch left by another loop, stopped mid-turn, is abandoned with that loop.)
        self._pending, self._loop = [(args, None)], loop
        try:
            await asyncio.sleep(0)  # one turn: the other ready tasks add their commands
        except BaseException:  # cancelled, or closed with its loop
            rest = self._take()[1:]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to answer
                self._send_in_task(rest)  # the others still go out
            raise
        batch = self._take()
        if len(batch) == 1:
            return await self.client.execute_command(*args)
        mine: asyncio.Future[Any] = loop.create_future()
        batch[0] = (args, mine)
        self._send_in_task(batch)
        return await mine

    def _take(self) -> list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]]:
        batch, self._pending = self._pending or [], None
        return [(args, f) for args, f in batch if f is None or not f.done()]

    def _send_in_task(
        self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]]
    ) -> None:
        futures = [f for _, f in batch if f is not None]
        if not futures:
            return
        task = asyncio.get_running_loop().create_task(
            self._send([args for args, _ in batch], futures)
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(
        self, commands: list[tuple[Any, ...]], futures: list[asyncio.Future[Any]]
    ) -> None:
        try:
            if len(commands) == 1:
                replies = [await self.client.execute_command(*commands[0])]
            else:
                pipe = self.client.pipeline(transaction=False)
                for args in commands:
                    pipe.execute_command(*args)
                replies = list(await pipe.execute(raise_on_error=False))
        except BaseException as exc:
            for future in futures:
                _settle(future, exc)
            if not isinstance(exc, Exception):
                raise  # the loop is cancelling the task (shutting down): let it
            return
        for future, reply in zip(futures, replies, strict=True):
            _settle(future, reply)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """Give ``future`` its reply or error, unless its task stopped waiting (cancelled)."""
    if future.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def batcher_of(client: Any) -> Batcher:
    batcher = getattr(client, _ATTRIBUTE, None)
    if not isinstance(batcher, Batcher):
        batcher = Batcher(client)
        setattr(client, _ATTRIBUTE, batcher)
    return batcher


async def gather_batched(batcher: Batcher, commands: list[tuple[Any, ...]]) -> list[Any]:
    sent = (batcher.execute_command(*args) for args in commands)
    replies = await asyncio.gather(*sent, return_exceptions=True)
    for reply in replies:  # an error reply stays in its place; anything else fails them all
        if isinstance(reply, BaseException) and not isinstance(reply, rex.ResponseError):
            raise reply
    return list(replies)
