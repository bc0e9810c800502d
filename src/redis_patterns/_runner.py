"""The two drivers that run plans: `SyncRunner` (blocking) and `AsyncRunner` (asyncio).

A runner turns each effect a plan yields into steps (`effect_steps`: ``_redis``'s generators for
the effects that send commands; the clock, sleeps and user calls here) and performs them. A step
is one call, which the sync runner makes and the asyncio runner makes and awaits, or a `Gather`
(threads, or tasks). That loop, ``_drive``, and the fan-out are all that is written twice; errors
are thrown into the plan at the failed ``yield``, already converted by ``_redis``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from . import _background
from ._clients import read_timeout, warn_if_risky
from ._errors import BackendTimeoutError, ConfigurationError
from ._plan import (
    Call,
    Command,
    Effect,
    Eval,
    FCall,
    Gather,
    Multi,
    Now,
    Pipeline,
    Plan,
    Replicated,
    Sleep,
    Transaction,
)
from ._redis import (
    ASYNC_TYPES,
    AsyncClient,
    AsyncPipeline,
    AsyncTransactionFunction,
    Invoke,
    Steps,
    SyncClient,
    SyncPipeline,
    TransactionFunction,
    check_clients,
    client_features,
    decodes_responses,
    is_cluster,
    map_backend_error,
    node_address,
)
from ._redis_steps import (
    command_steps,
    eval_steps,
    fcall_steps,
    pipeline_steps,
    replicated_steps,
)
from ._redis_transaction import multi_steps, transaction_steps

__all__ = [
    "AsyncClient",
    "AsyncPipeline",
    "AsyncRunner",
    "AsyncTransactionFunction",
    "SyncClient",
    "SyncPipeline",
    "SyncRunner",
    "TransactionFunction",
    "client_features",
    "effect_steps",
    "map_backend_error",
    "node_address",
    "plan_steps",
    "require_bytes_replies",
    "runner_for",
]

log = logging.getLogger("redis_patterns")

T = TypeVar("T")


# --- shared by both runners: effects as steps ------------------------------------------------


def plan_steps(plan: Plan[T], runner: SyncRunner | AsyncRunner) -> Steps[T]:
    """``plan``'s effects as steps; each effect's result (or error) goes back into the plan."""
    try:
        effect = next(plan)
        while True:
            try:
                result = yield from effect_steps(effect, runner)
            except BaseException as exc:
                effect = plan.throw(exc)
            else:
                effect = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        plan.close()


def effect_steps(effect: Effect, runner: SyncRunner | AsyncRunner) -> Steps[Any]:
    """The steps that perform ``effect``: the one dispatch on the effect's type."""
    match effect:  # the most frequent first: a script, a cache hit's pipeline, a command
        case Eval():
            return eval_steps(effect, runner)
        case Pipeline():
            return pipeline_steps(effect, runner)
        case Command():
            return command_steps(effect, runner)
        case Now():
            return _now()
        case Call():
            return _call(effect, runner)
        case Sleep(seconds=seconds):
            return _sleep(runner, seconds)
        case Gather():
            return _fan_out(effect)
        case Transaction():
            return transaction_steps(effect, runner)
        case FCall():
            return fcall_steps(effect, runner)
        case Replicated():
            return replicated_steps(effect, runner)
        case Multi():
            return multi_steps(effect, runner)
    raise TypeError(f"unknown effect {effect!r}")


def _now() -> Steps[float]:
    if False:
        yield  # a generator that takes no step
    return time.monotonic()


def _sleep(runner: SyncRunner | AsyncRunner, seconds: float) -> Steps[None]:
    yield Invoke(runner.sleep, (seconds,))


def _fan_out(effect: Gather) -> Steps[list[Any]]:
    results: list[Any] = yield effect  # the runner runs each effect in a thread or a task
    return results


def _call(effect: Call, runner: SyncRunner | AsyncRunner) -> Steps[Any]:
    result = yield Invoke(effect.func, effect.args)  # the asyncio runner awaits an awaitable
    if inspect.isawaitable(result) and not runner.asynchronous:
        if inspect.iscoroutine(result):
            result.close()
        raise ConfigurationError(
            f"{effect.func!r} returned an awaitable: async callables need the async class"
        )
    return result


def _gathered(futures: Sequence[Any]) -> list[Any]:
    """A fan-out's results in order (futures or tasks): each one's result or exception; one
    still running counts as a `BackendTimeoutError` (and a task is cancelled)."""
    results: list[Any] = []
    for future in futures:
        if not future.done():
            future.cancel()  # a running thread's future cannot be: it ends on its own
            results.append(BackendTimeoutError("no reply within the fan-out timeout"))
        elif (error := future.exception()) is not None:
            results.append(error)
        else:
            results.append(future.result())
    return results


def _logged(plan: Plan[Any]) -> Plan[None]:
    """``plan``, its failure logged rather than raised: a background plan has no caller."""
    try:
        yield from plan
    except Exception:
        log.exception("background plan failed")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a background task's outcome as seen (its error belongs to nobody now)."""
    if not task.cancelled():
        task.exception()


class _Runner:
    """What both runners hold: the clients, checked, and what is known about them."""

    # Lets a plan refuse, before any I/O, a callback of the wrong flavour.
    asynchronous: ClassVar[bool]

    def __init__(self, clients: Any) -> None:
        self.clients: tuple[Any, ...] = check_clients(clients, asynchronous=self.asynchronous)
        warn_if_risky(self.clients)
        self.cluster = is_cluster(self.clients[0])
        # What the (first) client's server supports, as its plans have learnt it.
        self.features = client_features(self.clients[0])
        # Patterns that store binary payloads need bytes back (decode_responses=False).
        self.decodes_responses = any(decodes_responses(c) for c in self.clients)
        # A blocking read (XREADGROUP BLOCK) must return before the socket gives up on it.
        self.read_timeout = read_timeout(self.clients[0])
        # Whether the clients are ready for commands (see `AsyncRunner.initialize`).
        self.ready = True


class SyncRunner(_Runner):
    """Performs effects with a blocking redis-py client (or several, for fan-out patterns)."""

    asynchronous: ClassVar[bool] = False
    sleep = staticmethod(time.sleep)

    def __init__(self, clients: SyncClient | Sequence[SyncClient]) -> None:
        super().__init__(clients)

    def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` to its end and return its value."""
        return self._drive(plan_steps(plan, self))

    def perform(self, effect: Effect) -> Any:
        """Perform one effect and return its result, raising the library's errors."""
        return self._drive(effect_steps(effect, self))

    def _drive(self, steps: Steps[T]) -> T:
        try:
            step = next(steps)
            while True:
                try:
                    # Not a `match` class pattern: this costs a third of one, on every command
                    # the library sends.
                    if isinstance(step, Invoke):
                        func, args, kwargs = step
                        reply = func(*args, **kwargs) if kwargs else func(*args)
                    else:
                        reply = self._gather(step)
                except BaseException as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(reply)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def initialize(self) -> None:
        """Nothing to do: sync clients are ready (see `AsyncRunner.initialize`)."""

    def run_shielded(self, plan: Plan[T]) -> T:
        """`run`; the asyncio twin finishes the plan even when the caller is cancelled."""
        return self.run(plan)

    def repeat(
        self,
        job: _background.SyncJob[T],
        owner: T,
        delay: float,
        *,
        dropped: str | None = None,
    ) -> _background.Handle:
        """Run ``job(owner)`` after ``delay`` s on the process's one shared background thread.

        ``job`` returns the delay until its next run, or ``None`` to stop. ``owner`` is held
        weakly: once it is collected the job stops (warning ``dropped``, if given).
        """
        return _background.thread_ticker().add(job, owner, delay, dropped=dropped)

    def spawn(self, plan: Plan[Any]) -> None:
        """Run ``plan`` in a background daemon thread; its failure is logged, not raised."""
        threading.Thread(
            target=self.run, args=(_logged(plan),), daemon=True, name="redis-patterns-background"
        ).start()

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
        return _gathered(futures)

    def _perform_into(self, effect: Effect, future: concurrent.futures.Future[Any]) -> None:
        try:
            future.set_result(self.perform(effect))
        except BaseException as exc:
            future.set_exception(exc)


class AsyncRunner(_Runner):
    """Performs effects with an asyncio redis-py client (or several, for fan-out patterns)."""

    asynchronous: ClassVar[bool] = True
    sleep = staticmethod(asyncio.sleep)

    def __init__(self, clients: AsyncClient | Sequence[AsyncClient]) -> None:
        super().__init__(clients)
        self.ready = not self.cluster
        self._ready_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, plan: Plan[T]) -> T:
        """Drive ``plan`` to its end and return its value."""
        return await self._drive(plan_steps(plan, self))

    async def perform(self, effect: Effect) -> Any:
        """Perform one effect and return its result, raising the library's errors."""
        return await self._drive(effect_steps(effect, self))

    async def _drive(self, steps: Steps[T]) -> T:
        try:
            step = next(steps)
            while True:
                try:
                    if isinstance(step, Invoke):  # (see `SyncRunner._drive`)
                        func, args, kwargs = step
                        reply = func(*args, **kwargs) if kwargs else func(*args)
                        if inspect.isawaitable(reply):
                            reply = await reply
                    else:
                        reply = await self._gather(step)
                except BaseException as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(reply)
        except StopIteration as stop:
            value: T = stop.value
            return value

    async def initialize(self) -> None:
        """Let each cluster client learn its nodes, once (the steps convert its errors).

        A cold asyncio cluster client hit by many concurrent first commands initializes several
        times at once, and redis-py then drops connections other tasks are still opening
        (AttributeError on a None writer). So: once, behind a lock.
        """
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if not self.ready:
                for client in self.clients:
                    await client.initialize()
                self.ready = True

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

    def repeat(
        self,
        job: _background.AsyncJob[T],
        owner: T,
        delay: float,
        *,
        dropped: str | None = None,
    ) -> _background.Handle:
        """Run ``await job(owner)`` after ``delay`` s on the running loop's one shared task.

        ``job`` returns the delay until its next run, or ``None`` to stop. ``owner`` is held
        weakly: once it is collected the job stops (warning ``dropped``, if given).
        """
        return _background.loop_ticker().add(job, owner, delay, dropped=dropped)

    def spawn(self, plan: Plan[Any]) -> None:
        """Run ``plan`` as a background task of the running loop; its failure is logged."""
        task = asyncio.ensure_future(self.run(_logged(plan)))
        self._tasks.add(task)  # a strong reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _gather(self, effect: Gather) -> list[Any]:
        tasks = [asyncio.ensure_future(self.perform(e)) for e in effect.effects]
        await asyncio.wait(tasks, timeout=effect.timeout)
        return _gathered(tasks)


def require_bytes_replies(runner: SyncRunner | AsyncRunner, why: str) -> None:
    """Refuse, before any I/O, clients made with ``decode_responses=True`` for a pattern whose
    replies must stay bytes; ``why`` says what the pattern stores."""
    if runner.decodes_responses:
        raise ConfigurationError(
            f"the client was created with decode_responses=True; {why}: use a client with "
            "decode_responses=False"
        )


def runner_for(client: SyncClient | AsyncClient) -> SyncRunner | AsyncRunner:
    """The runner matching ``client``'s flavour (sync or asyncio)."""
    if isinstance(client, ASYNC_TYPES):
        return AsyncRunner(client)
    return SyncRunner(client)
