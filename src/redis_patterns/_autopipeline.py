"""Auto-pipelining for asyncio clients: the commands concurrent tasks send in one turn of the
event loop go out as one pipeline (one per node on a cluster), each reply back to its task (see
`Batcher` and `ClusterBatcher`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import redis.asyncio.cluster
import redis.exceptions as rex

__all__ = ["BLOCKING", "REDIRECTED", "Batcher", "ClusterBatcher", "batcher_of"]

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


# One caller's part of a batch: its commands, whether it asked for one command (its reply, or
# its error reply raised) or for a pipeline (the list of replies, error replies in place), and
# the future that gets them (None: the sender's own part, which it reads itself).
_Part: TypeAlias = "tuple[Sequence[tuple[Any, ...]], bool, asyncio.Future[Any] | None]"
# What `Batcher._join` answers a sender that found itself alone in its turn.
_ALONE: Any = object()
# Sends ``commands`` in one write on one connection of a standalone client or of a cluster
# node: their replies, error replies in place (`_redis_steps.node_exchange`).
Exchange: TypeAlias = "Callable[[Any, Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]"


class Batcher:
    """An asyncio client's auto-pipeline: the commands its tasks issue in one turn of the event
    loop go out together, as one pipeline, and each reply goes back to the task that asked.

    The first caller of a turn becomes the batch's sender: it yields one turn (``sleep(0)``),
    so every task that was ready in this turn adds its command (or a whole pipeline: a cache
    hit's ``MGET`` and ``TIME``, `join`), then takes the batch. Alone, it sends its command
    itself, an exchange of its own exactly as without batching, and a pipeline comes back to
    its steps to be sent as without batching: a lone caller pays one loop turn, no task, no
    future, and not even the turn when no other task is ready to run in it. With company, the
    batch goes out as one write on one connection (``exchange``; not redis-py's ``Pipeline``,
    which would follow a re-sending ``Retry`` and packs in Python) in a task of its own, so no
    caller's cancellation can break it for the others: a part cancelled before the batch is
    taken is left out, a reply whose caller stopped waiting is dropped. Nothing is ever re-sent
    here: a batch that fails (a lost connection, a timeout) fails every part in it with that
    error (outcome unknown), which the steps map like any other.
    """

    __slots__ = ("_loop", "_pending", "_sending", "client", "enabled", "exchange")

    def __init__(self, client: Any, exchange: Exchange) -> None:
        self.client = client
        self.exchange = exchange
        self.enabled = True
        self._pending: list[_Part] | None = None  # this turn's batch (None: no sender waits)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of that batch
        self._sending: set[asyncio.Task[None]] = set()  # strong references while they run

    def execute_command(self, *args: Any) -> Awaitable[Any]:
        """One command's reply, sent with this turn's batch; an error reply is raised."""
        if self.alone():
            return self._lone(args)
        return self._command(args)

    def join(self, commands: Sequence[tuple[Any, ...]]) -> Awaitable[list[Any] | None] | None:
        """The replies of ``commands`` (error replies in place), sent with this turn's batch;
        ``None`` (at once, or awaited) when they are alone in it: the caller sends them."""
        return None if self.alone() else self._pipeline(commands)

    def alone(self) -> bool:
        """Whether a call now is alone in its turn without waiting for it: no sender waits,
        and no other task will run before the loop polls again (`_nothing_else_ready`)."""
        loop = asyncio.get_running_loop()
        waiting = self._pending is not None and self._loop is loop
        return not waiting and _nothing_else_ready(loop)

    async def _command(self, args: tuple[Any, ...]) -> Any:
        reply = await self._join((args,), True)
        if reply is _ALONE:
            return await self._lone(args)
        return reply

    async def _lone(self, args: tuple[Any, ...]) -> Any:
        """One command sent on its own, as without batching: an exchange of its own, which
        never re-sends (not ``execute_command``, which follows the client's ``Retry``)."""
        (reply,) = await self.exchange(self.client, (args,))
        if isinstance(reply, rex.ResponseError):
            raise reply
        return reply

    async def _pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any] | None:
        replies = await self._join(commands, False)
        return None if replies is _ALONE else replies

    async def _join(self, commands: Sequence[tuple[Any, ...]], single: bool) -> Any:
        loop = asyncio.get_running_loop()
        if self._pending is not None and self._loop is loop:  # a sender waits: ride along
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((commands, single, future))
            return await future
        # (A batch left by another loop, stopped mid-turn, is abandoned with that loop.)
        self._pending, self._loop = [(commands, single, None)], loop
        try:
            await asyncio.sleep(0)  # one turn: the other ready tasks add their commands
        except BaseException:  # cancelled, or closed with its loop
            rest = self._take()[1:]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to answer
                self._send_in_task(rest)  # the others still go out
            raise
        batch = self._take()
        if len(batch) == 1:
            return _ALONE
        mine: asyncio.Future[Any] = loop.create_future()
        batch[0] = (commands, single, mine)
        self._send_in_task(batch)
        return await mine

    def _take(self) -> list[_Part]:
        batch, self._pending = self._pending or [], None
        return [part for part in batch if part[2] is None or not part[2].done()]

    def _send_in_task(self, batch: list[_Part]) -> None:
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Part]) -> None:
        commands, spans = _flatten(batch)
        try:
            replies = await self.exchange(self.client, commands)
        except BaseException as exc:
            for _, _, future in batch:
                _settle(future, exc)
            if not isinstance(exc, Exception):
                raise  # the loop is cancelling the task (shutting down): let it
            return
        for (_, single, future), span in zip(batch, spans, strict=True):
            _settle(future, _replies_of(replies, span, single))


# A part's ``TIME`` last (a cache hit's: `Cache.get` judges the entry it just read on the
# server's clock): one for all such parts of a write, at its end (`_flatten`).
_TIME = ("TIME",)
# Where one part's replies are in its write's: ``replies[start:end]``, then the shared
# ``TIME``'s (the write's last reply) if it had one.
_Span: TypeAlias = "tuple[int, int, bool]"


def _flatten(parts: Sequence[_Part]) -> tuple[list[tuple[Any, ...]], list[_Span]]:
    """The commands of ``parts`` as one write, and where each part's replies will be.

    The parts whose last command is ``TIME`` share one, sent last: each part's own commands
    keep their order and run before its clock is read, as they do alone (in a batch other
    parts' commands always ran between them), and the write carries one ``TIME`` and its reply
    rather than one per part: for 100 concurrent cache hits, 101 commands instead of 200.
    """
    commands: list[tuple[Any, ...]] = []
    spans: list[_Span] = []
    clock = False
    for part in parts:
        own = part[0]
        start = len(commands)
        shared = bool(own) and own[-1] == _TIME
        commands.extend(own[:-1] if shared else own)
        spans.append((start, len(commands), shared))
        clock = clock or shared
    if clock:
        commands.append(_TIME)
    return commands, spans


def _replies_of(replies: list[Any], span: _Span, single: bool) -> Any:
    """One part's replies out of its write's (`_flatten`): its one reply when ``single``."""
    start, end, shared = span
    if single:
        return replies[-1] if shared else replies[start]
    mine = replies[start:end]
    if shared:
        mine.append(replies[-1])
    return mine


# Error replies that say a cluster node did not run the command (its slot is served elsewhere,
# for good or during a migration, or its keys are split by one): it is safe to send it again.
REDIRECTED = (rex.AskError, rex.TryAgainError)  # MovedError is an AskError
# Where a command keeps its keys, for the commands the patterns send (any other is not batched
# on a cluster): its one key second, every argument after the name a key, or none (``TIME``
# rides along on its part's node; alone it goes the unbatched way). Scripts name their keys.
# fmt: off
_ONE_KEY = frozenset({
    "GET", "SET", "GETRANGE", "INCR", "INCRBY", "PTTL", "EXPIRE", "PEXPIRE", "HGET", "HGETALL",
    "HSET", "HINCRBY", "ZADD", "ZINCRBY", "ZSCORE", "ZRANK", "ZREVRANK", "ZRANGE", "ZREVRANGE",
    "ZREM", "ZCARD", "XADD", "XRANGE", "XREVRANGE", "XLEN", "XTRIM", "XDEL", "XACK", "XCLAIM",
    "XAUTOCLAIM", "XPENDING", "DELIFEQ",
})
# fmt: on
_ALL_KEYS = frozenset({"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH"})
_SCRIPTS = frozenset({"EVAL", "EVALSHA", "FCALL", "FCALL_RO"})
_NO_KEYS = frozenset({"TIME"})


class ClusterBatcher(Batcher):
    """An asyncio cluster client's auto-pipeline: a turn's commands go out as one write per
    node, each on one connection of its node, and each reply goes back to its task.

    A part (one caller's command or pipeline) goes to the primary that serves all its keys, by
    the client's slot map, without I/O. A part whose node cannot be told (a command not in the
    key table above, keys in several slots or on several nodes, a slot map the client is about
    to re-read) goes the unbatched way, sent by its caller through redis-py's own routing; so
    does a part alone on its node (the same one write). The nodes' writes run concurrently and
    fail alone: a lost link or a timeout fails every part on that node with that error
    (outcome unknown) and nothing is re-sent (redis-py's cluster pipeline would send it all
    again); the client only re-reads its slot map before its next command, as redis-py does. A
    ``MOVED``, ``ASK`` or ``TRYAGAIN`` reply means the command did not run, so it may be sent
    again: an ``ASK`` item goes to the node it names behind ``ASKING`` (`_ask`); after a
    ``MOVED`` the slot map is corrected, and the item, like any still redirected, goes to its
    caller, which sends it again the unbatched way.
    """

    __slots__ = ()

    async def _lone(self, args: tuple[Any, ...]) -> Any:
        return await self.client.execute_command(*args)  # redis-py routes it by its keys

    async def _send(self, batch: list[_Part]) -> None:
        nodes: dict[str, tuple[Any, list[_Part]]] = {}
        stale = getattr(self.client, "_initialize", False)  # redis-py re-reads the map first
        for part in batch:
            node = None if stale else self._node_of(part[0])
            if node is None:
                _settle(part[2], _ALONE)
            else:
                nodes.setdefault(node.name, (node, []))[1].append(part)
        for node, parts in list(nodes.values()):
            if len(parts) == 1:
                _settle(parts[0][2], _ALONE)
                del nodes[node.name]
        await asyncio.gather(*(self._send_to(node, parts) for node, parts in nodes.values()))

    def _node_of(self, commands: Sequence[tuple[Any, ...]]) -> Any:
        """The primary that serves every key of ``commands``, or ``None`` (also for arguments
        it cannot read: redis-py, sending them unbatched, says what is wrong with them)."""
        found = None
        for args in commands:
            try:
                keys = _keys(args)
                slots = {self.client.keyslot(key) for key in keys or ()}
            except Exception:
                return None
            if keys is None or len(slots) > 1:
                return None
            if not slots:
                continue
            owners = self.client.nodes_manager.slots_cache.get(slots.pop())
            if not owners or (found is not None and owners[0].name != found.name):
                return None
            found = owners[0]
        return found

    async def _send_to(self, node: Any, parts: list[_Part]) -> None:
        commands, spans = _flatten(parts)
        try:
            replies = await self.exchange(node, commands)
        except BaseException as exc:
            # The node's pool had no connection to lend (client-side exhaustion, nothing sent):
            # not a failed node, as redis-py also tells them apart.
            lost = not isinstance(exc, getattr(rex, "MaxConnectionsError", ()))
            if lost and isinstance(exc, rex.ConnectionError | rex.TimeoutError):
                await self._lost(node)
            for _, _, future in parts:
                _settle(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        # What follows only saves the unbatched re-send of a redirected item a round trip: if
        # it fails, the item keeps its redirection, and every future is still settled below.
        try:
            with contextlib.suppress(Exception):
                asked = [i for i, reply in enumerate(replies) if type(reply) is rex.AskError]
                if asked:
                    await self._ask(commands, replies, asked)
                # Correct the slot map once per moved slot, as redis-py does on MOVED (redis-py
                # 8; an older one corrects it when the caller's unbatched re-send meets it).
                move_slot = getattr(self.client.nodes_manager, "move_slot", None)
                moved = {r.slot_id: r for r in replies if isinstance(r, rex.MovedError)}
                if move_slot is not None:
                    for error in moved.values():
                        await move_slot(error)
        except BaseException as exc:  # cancelled meanwhile (the loop is shutting down)
            for _, _, future in parts:
                _settle(future, exc)
            raise
        for (_, single, future), span in zip(parts, spans, strict=True):
            mine = _replies_of(replies, span, single)
            if single and isinstance(mine, REDIRECTED):
                _settle(future, _ALONE)  # its caller sends it again, routed by redis-py
            else:
                _settle(future, mine)

    async def _lost(self, node: Any) -> None:
        """What redis-py does when a command's link to ``node`` fails: the node's other
        connections are closed (the idle ones now, the busy ones when they come back), and the
        client re-reads its slot map before its next command (the node may have failed over)."""
        with contextlib.suppress(AttributeError):  # redis-py 8 names
            node.update_active_connections_for_reconnect()
            await node.disconnect_free_connections()
        self.client._initialize = True

    async def _ask(
        self, commands: list[tuple[Any, ...]], replies: list[Any], asked: list[int]
    ) -> None:
        """Send the items answered ``ASK`` (a slot half-way through a migration, the key gone:
        the item did not run) to the node the answer names, each behind ``ASKING`` on the same
        connection, one write per node; their replies take the ``ASK``'s place.

        Not left to redis-py: its asyncio client sends ``ASKING`` and the command as two
        commands, each on whichever of the node's connections is free, so concurrent
        redirected calls lose the ``ASKING`` (seen: with 20 concurrent calls on a migrating
        slot, unbatched calls failed). An item whose node is unknown keeps its ``ASK`` and goes
        the unbatched way; a lost link fails its items (outcome unknown), as any batch.
        """
        manager = self.client.nodes_manager
        remap = getattr(manager, "remap_host_port", None)
        nodes: dict[str, tuple[Any, list[int]]] = {}
        for index in asked:
            error = replies[index]
            address = (error.host, error.port) if remap is None else remap(error.host, error.port)
            node = manager.get_node(host=address[0], port=address[1])
            if node is not None:
                nodes.setdefault(node.name, (node, []))[1].append(index)
        for node, indices in nodes.values():
            sent = [args for i in indices for args in (("ASKING",), commands[i])]
            try:
                again = await self.exchange(node, sent)
            except Exception as exc:
                if isinstance(exc, rex.ConnectionError | rex.TimeoutError):
                    await self._lost(node)
                again = [exc] * len(sent)
            for k, index in enumerate(indices):
                replies[index] = again[2 * k + 1]


def _keys(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The keys of one command by the table above, ``None`` for a command not in it."""
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    name = name.upper()
    if name in _SCRIPTS:
        keys = tuple(args[3 : 3 + int(args[2])])
        return keys or None  # a script without keys runs anywhere: redis-py picks
    if name in _ONE_KEY:
        return tuple(args[1:2]) or None
    if name in _ALL_KEYS:
        return tuple(args[1:]) or None
    return () if name in _NO_KEYS else None


def _nothing_else_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing else runs in this turn of ``loop`` before it polls for I/O again.

    asyncio's own loops keep this turn's callbacks (each ready task's next step) in ``_ready``,
    as they have since Python 3.4; the running one has been taken off it. Empty, no other task
    can send a command before the next poll, so a lone caller sends at once rather than pay a
    loop turn. Another loop (uvloop) does not say: the caller waits the turn.
    """
    ready = getattr(loop, "_ready", None)
    return isinstance(ready, collections.deque) and not ready


def _settle(future: asyncio.Future[Any] | None, outcome: Any) -> None:
    """Give ``future`` its reply or error, unless its task stopped waiting (cancelled)."""
    if future is None or future.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def batcher_of(client: Any, exchange: Exchange) -> Batcher:
    """The auto-pipeline of ``client``, made on first use; its batches go out through
    ``exchange``."""
    batcher = getattr(client, _ATTRIBUTE, None)
    if not isinstance(batcher, Batcher):
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            batcher = ClusterBatcher(client, exchange)
        else:
            batcher = Batcher(client, exchange)
        setattr(client, _ATTRIBUTE, batcher)
    return batcher
