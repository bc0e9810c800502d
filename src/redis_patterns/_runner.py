"""The two drivers that perform a plan's effects: `SyncRunner` (blocking) and `AsyncRunner`.

This is the only layer that talks to redis-py; it converts redis-py's errors to the library's
in one place (`map_backend_error`) and throws them into the plan at the failed ``yield``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeAlias, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError

from . import _background
from ._errors import BackendTimeoutError, ConfigurationError, CrossSlotError, map_backend_error
from ._plan import Command, Effect, Eval, Gather, KeyT, Now, Plan, Sleep

__all__ = [
    "AsyncClient",
    "AsyncRunner",
    "SyncClient",
    "SyncRunner",
    "node_address",
    "runner_for",
]

T = TypeVar("T")

SyncClient: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"
AsyncClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

_SYNC_TYPES = (redis.Redis, redis.cluster.RedisCluster)
_ASYNC_TYPES = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
_CLUSTER_TYPES = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


def _check_slots(client: object, keys: Sequence[KeyT]) -> None:
    """Refuse, before any I/O, keys that a cluster would spread over several slots."""
    if len(keys) > 1 and isinstance(client, _CLUSTER_TYPES):
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
        if len(slots) > 1:
            raise CrossSlotError(
                f"keys {list(keys)!r} hash to {len(slots)} different cluster slots; give them a "
                "common hash tag, e.g. '{user:42}:a' and '{user:42}:b'"
            )


def _eval_args(effect: Eval) -> tuple[Any, ...]:
    return (len(effect.keys), *effect.keys, *effect.args)


def _describe(client: object) -> str:
    return type(client).__module__ + "." + type(client).__qualname__


class SyncRunner:
    """Performs effects with a blocking redis-py client (or several, for fan-out patterns)."""

    def __init__(self, clients: SyncClient | Sequence[SyncClient]) -> None:
        self.clients: tuple[SyncClient, ...] = _as_tuple(clients, _SYNC_TYPES, "a sync")

    def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` to its end and return its value."""
        try:
            effect = next(plan)
            while True:
                try:
                    result = self.perform(effect)
                except BaseException as exc:
                    effect = plan.throw(exc)
                else:
                    effect = plan.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            plan.close()

    def run_shielded(self, plan: Plan[T]) -> T:
        """`run`; the asyncio twin finishes the plan even when the caller is cancelled."""
        return self.run(plan)

    def repeat(self, job: _background.SyncJob, delay: float) -> _background.Handle:
        """Run ``job`` after ``delay`` s on the process's one shared background thread.

        ``job`` returns the delay until its next run, or ``None`` to stop.
        """
        return _background.thread_ticker().add(job, delay)

    def perform(self, effect: Effect) -> Any:
        """Perform one effect and return its result, raising the library's errors."""
        if isinstance(effect, Eval):
            client: Any = self.clients[effect.node or 0]  # redis-py's union is partly untyped
            _check_slots(client, effect.keys)
            try:
                try:
                    return client.execute_command("EVALSHA", effect.script.sha, *_eval_args(effect))
                except NoScriptError:
                    return client.execute_command("EVAL", effect.script.source, *_eval_args(effect))
            except RedisError as exc:
                raise map_backend_error(exc, in_script=True) from exc
        if isinstance(effect, Command):
            try:
                target: Any = self.clients[effect.node or 0]
                return target.execute_command(*effect.args)
            except RedisError as exc:
                raise map_backend_error(exc) from exc
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, Now):
            return time.monotonic()
        if isinstance(effect, Gather):
            return self._gather(effect)
        raise TypeError(f"unknown effect {effect!r}")

    def _gather(self, effect: Gather) -> list[Any]:
        # One short-lived daemon thread per effect rather than a fixed pool: a call stuck on a
        # hung server (until its socket timeout) must not delay the next fan-out's calls to
        # healthy servers, nor keep the interpreter from exiting.
        futures: list[concurrent.futures.Future[Any]] = []
        for sub in effect.effects:
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            future.set_running_or_notify_cancel()
            thread = threading.Thread(
                target=self._perform_into,
                args=(sub, future),
                name="redis-patterns-gather",
                daemon=True,
            )
            thread.start()
            futures.append(future)
        concurrent.futures.wait(futures, timeout=effect.timeout)
        results: list[Any] = []
        for future in futures:
            if not future.done():
                results.append(BackendTimeoutError("no reply within the fan-out timeout"))
            elif (error := future.exception()) is not None:
                results.append(error)
            else:
                results.append(future.result())
        return results

    def _perform_into(self, effect: Effect, future: concurrent.futures.Future[Any]) -> None:
        try:
            future.set_result(self.perform(effect))
        except BaseException as exc:
            future.set_exception(exc)


class AsyncRunner:
    """Performs effects with an asyncio redis-py client (or several, for fan-out patterns)."""

    def __init__(self, clients: AsyncClient | Sequence[AsyncClient]) -> None:
        self.clients: tuple[AsyncClient, ...] = _as_tuple(clients, _ASYNC_TYPES, "an asyncio")

    async def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` to its end and return its value."""
        try:
            effect = next(plan)
            while True:
                try:
                    result = await self.perform(effect)
                except BaseException as exc:
                    effect = plan.throw(exc)
                else:
                    effect = plan.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            plan.close()

    async def run_shielded(self, plan: Plan[T]) -> T:
        """`run`, shielded from cancellation: a cancelled caller gets ``CancelledError`` at once
        while the plan still runs to its end (e.g. a lock release is neither half done nor
        forgotten)."""
        task = asyncio.ensure_future(self.run(plan))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_retrieve)
            raise

    def repeat(self, job: _background.AsyncJob, delay: float) -> _background.Handle:
        """Run ``job`` after ``delay`` s on the running loop's one shared background task.

        ``job`` returns the delay until its next run, or ``None`` to stop.
        """
        return _background.loop_ticker().add(job, delay)

    async def perform(self, effect: Effect) -> Any:
        """Perform one effect and return its result, raising the library's errors."""
        if isinstance(effect, Eval):
            client = self.clients[effect.node or 0]
            _check_slots(client, effect.keys)
            try:
                try:
                    return await client.execute_command(
                        "EVALSHA", effect.script.sha, *_eval_args(effect)
                    )
                except NoScriptError:
                    return await client.execute_command(
                        "EVAL", effect.script.source, *_eval_args(effect)
                    )
            except RedisError as exc:
                raise map_backend_error(exc, in_script=True) from exc
        if isinstance(effect, Command):
            try:
                return await self.clients[effect.node or 0].execute_command(*effect.args)
            except RedisError as exc:
                raise map_backend_error(exc) from exc
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Now):
            return time.monotonic()
        if isinstance(effect, Gather):
            return await self._gather(effect)
        raise TypeError(f"unknown effect {effect!r}")

    async def _gather(self, effect: Gather) -> list[Any]:
        tasks = [asyncio.ensure_future(self.perform(e)) for e in effect.effects]
        await asyncio.wait(tasks, timeout=effect.timeout)
        results: list[Any] = []
        for task in tasks:
            if not task.done():
                task.cancel()
                results.append(BackendTimeoutError("no reply within the fan-out timeout"))
            elif (error := task.exception()) is not None:
                results.append(error)
            else:
                results.append(task.result())
        return results


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome as seen (its error belongs to nobody now)."""
    if not task.cancelled():
        task.exception()


def node_address(client: object) -> str:
    """``host:port`` (or the unix socket path) a standalone client connects to; no I/O.

    Raises:
        TypeError: ``client`` is a cluster client (it has no single address).
    """
    if isinstance(client, _CLUSTER_TYPES):
        raise TypeError("expected a standalone client, got a cluster client")
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _as_tuple(clients: Any, types: tuple[type, ...], kind: str) -> tuple[Any, ...]:
    items = tuple(clients) if isinstance(clients, list | tuple) else (clients,)
    if not items:
        raise ConfigurationError("at least one client is required")
    for client in items:
        if not isinstance(client, types):
            other = "asyncio" if kind == "a sync" else "sync"
            raise TypeError(
                f"expected {kind} redis-py client, got {_describe(client)}"
                + (f" (use the {other} variant of this class)" if _is_client(client) else "")
            )
    return items


def _is_client(obj: object) -> bool:
    return isinstance(obj, _SYNC_TYPES + _ASYNC_TYPES)


def runner_for(client: SyncClient | AsyncClient) -> SyncRunner | AsyncRunner:
    """The runner matching ``client``'s flavour (sync or asyncio)."""
    if isinstance(client, _ASYNC_TYPES):
        return AsyncRunner(client)
    return SyncRunner(client)
