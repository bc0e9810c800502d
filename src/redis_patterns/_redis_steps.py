"""Each effect that sends commands, as `Invoke` steps of redis-py calls: `Eval` (``EVALSHA``,
``EVAL`` after ``NOSCRIPT``), `FCall`, `Command`, and `Pipeline` / `Replicated` (several commands
in one write on one connection; on a standalone client without redis-py's ``Pipeline``), and
the asyncio clients' auto-pipelines (`autopipeline`; one node's share of a cluster batch is an
exchange on that node, `node_exchange`).

A cache hit is a pipeline (``MGET`` + ``TIME``), so this is a hot path. redis-py's ``Pipeline``
costs more client CPU than the round trip it saves: an object per call, its command stack, its
retry closure, its HIMPORT and script bookkeeping, observability hooks. `exchange_steps` does
what it does for a standalone pipeline and nothing else: one pooled connection, one packed
write, each reply read through the client's own ``parse_response`` (so redis-py's response
callbacks apply, for RESP2 or RESP3 and ``decode_responses`` as the client is configured), the
connection back to the pool. The results are those of ``execute(raise_on_error=False)``, except
that nothing is re-sent, whatever the client's ``Retry`` (a pipeline may hold writes, and the
library never re-sends what may have run: docs/architecture.md, "Retries"). A cluster
client's pipeline sent on its own keeps redis-py's ``Pipeline``: routing each item to its node
is its job; in an auto-pipelined batch each node's share is an exchange on that node. A lone
command on a standalone client is an exchange of one (`_send`), for the same reasons.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import redis
import redis.asyncio.cluster
import redis.exceptions as rex
from hiredis import pack_command as _hiredis_pack

from ._autopipeline import BLOCKING, REDIRECTED, Batcher, batcher_of
from ._plan import Command, Eval, FCall, KeyT, Pipeline, Replicated
from ._redis import (
    _COMMAND_ERRORS,
    _SCRIPT_ERRORS,
    ASYNC_TYPES,
    AsyncClient,
    Context,
    Invoke,
    Steps,
    _describe,
    _initialize,
    _map_item,
    check_slots,
    is_asyncio,
    is_cluster,
)

__all__ = [
    "autopipeline",
    "command_steps",
    "eval_steps",
    "exchange_steps",
    "fcall_steps",
    "node_exchange",
    "pack_commands",
    "pipeline_steps",
    "replicated_steps",
]

# redis-py before 5.3 names the command a pooled connection is taken for (its Pipeline says
# "MULTI"); 5.3 and later deprecate any argument there.
_VERSION = tuple(int(part) for part in redis.__version__.split(".")[:2] if part.isdigit())
_GET_ARGS: tuple[str, ...] = ("MULTI",) if _VERSION < (5, 3) else ()


def pack_commands(connection: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    """``commands`` as the bytes of one write on ``connection``.

    hiredis's packer (C) when the connection encodes as it does (UTF-8, strict), else redis-py's
    own. redis-py's asyncio connections never use hiredis to pack, and theirs costs about five
    times the client CPU (6 against 1.4 µs for a cache hit's ``MGET`` + ``TIME``). The bytes are
    the same: hiredis writes an int as its digits and a float as its ``repr``, as redis-py does.
    Anything it cannot take (a bool, ``None``, a bytearray, a lone surrogate, a command name with a
    space that redis-py would split) goes to redis-py's packer, which packs or refuses it as
    without this.
    """
    encoder = connection.encoder
    if encoder.encoding in _UTF8 and encoder.encoding_errors == "strict":
        try:
            packed = [_hiredis_pack(args) for args in commands]
        except (TypeError, UnicodeError):
            pass
        else:
            if not any(isinstance(args[0], str) and " " in args[0] for args in commands):
                # one buffer, so one send (a sync connection sends each item on its own):
                # unless it is big, when copying it all once more costs more than the sends
                if len(packed) > 1 and sum(map(len, packed)) <= _JOIN_BYTES:
                    return [b"".join(packed)]
                return packed
    return connection.pack_commands(commands)


_UTF8 = frozenset({"utf-8", "utf8", "UTF-8"})
_JOIN_BYTES = 64 * 1024


def exchange_steps(
    client: Any, commands: Sequence[tuple[Any, ...]], *, sending: Callable[[], None] | None = None
) -> Steps[list[Any]]:
    """``commands`` in one write on one connection of ``client``'s pool, and their replies in
    order, each parsed by ``client`` as ``execute_command`` would; an error reply is its
    ``ResponseError`` in its place, and the replies after it are still read.

    Nothing is re-sent. A failure on the link (a reset, a timeout) is raised as redis-py's
    error once the connection is closed: a connection whose replies were not all read never
    goes back to the pool as it is, where the next caller would read them as its own.
    ``sending`` is called once the connection is ready, just before the write (from then on
    the server may run the commands).

    One step (`_exchange`, `_exchange_async`), not one per redis-py call (a cache hit's two
    replies were six steps through every generator above this one), so no runner can stop
    between the write and the reads.
    """
    asynchronous = isinstance(client, _NodeLink) or is_asyncio(client)
    exchange = _exchange_async if asynchronous else _exchange
    replies: list[Any] = yield Invoke(exchange, (client, commands, sending))
    return replies


def _exchange(
    client: Any, commands: Sequence[tuple[Any, ...]], sending: Callable[[], None] | None
) -> list[Any]:
    """`exchange_steps` on a sync client, in one call."""
    pool = client.connection_pool
    connection = pool.get_connection(*_GET_ARGS)
    try:
        if sending is not None:
            sending()
        connection.send_packed_command(pack_commands(connection, commands))
        replies: list[Any] = []
        for args in commands:
            try:
                replies.append(client.parse_response(connection, args[0]))
            except rex.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        # redis-py closes the connection itself when a read or write fails; this also covers
        # a failure between them (a response callback's)
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


async def _exchange_async(
    client: Any, commands: Sequence[tuple[Any, ...]], sending: Callable[[], None] | None
) -> list[Any]:
    """`exchange_steps` on an asyncio client or cluster node (`_NodeLink`), in one call."""
    pool = client.connection_pool
    connection = await pool.get_connection(*_GET_ARGS)
    try:
        reader = getattr(connection, "_reader", None)
        if reader is not None and reader.at_eof():
            # The server closed this idle connection (a restart, CLIENT KILL, its idle
            # timeout): redis-py's pool lends it anyway when maintenance notifications are on
            # (its default). Nothing was sent on it yet, so reconnecting is no re-send.
            await connection.disconnect()
        if sending is not None:
            sending()
        await connection.send_packed_command(pack_commands(connection, commands))
        if _ONE_TIMER and len(commands) > 1:
            return await _read_replies(client, connection, commands)
        replies: list[Any] = []
        for args in commands:
            try:
                replies.append(await client.parse_response(connection, args[0]))
            except rex.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        # also a cancellation mid-read: the replies left unread die with the connection
        await connection.disconnect()
        raise
    finally:
        released = pool.release(connection)  # a coroutine for a pool, not for a `_NodeLink`
        if inspect.isawaitable(released):
            await released


# redis-py reads every asyncio reply under an `asyncio.timeout` of the connection's
# ``socket_timeout`` (5 s by default from redis-py 8): a timer armed and cancelled per reply,
# about 15 us of client CPU each, so a third of a batched cache hit's (MGET and TIME: two
# replies). From redis-py 8.1 a read can opt out (``timeout=math.inf``), and a batch's replies
# are read under one timer (`_read_replies`). Python before 3.11.3 has no `asyncio.timeout_at`
# redis-py trusts; there, and with older redis-py, each reply keeps its own.
_ONE_TIMER = _VERSION >= (8, 1) and sys.version_info >= (3, 11, 3)
_timeout_at: Any = getattr(asyncio, "timeout_at", None)  # Python 3.11+

# Each reply's window past the previous one is the socket timeout to 1.25 times it: the timer is
# moved only once that much time has passed, not per reply (see `_read_replies`).
_SLACK = 1.25


async def _read_replies(
    client: Any, connection: Any, commands: Sequence[tuple[Any, ...]]
) -> list[Any]:
    """The replies to ``commands`` on an asyncio ``connection``, as one ``client.parse_response``
    per reply gives them (an error reply its ``ResponseError`` in its place; the response
    callbacks applied), under one timer rather than one per reply.

    The first reply must come within ``socket_timeout``, as redis-py's own read asks; each
    later one within ``socket_timeout`` to 1.25 times it of the previous: the deadline is moved
    (`asyncio.Timeout.reschedule`, a timer cancelled and armed again) only when it is nearer
    than ``socket_timeout``, which in a batch answered at once is once, after the first reply.
    A timeout is redis-py's `TimeoutError`, as from its own reads; `_exchange_async` closes
    the connection.
    """
    limit = connection.socket_timeout
    callbacks = client.response_callbacks
    loop = asyncio.get_running_loop()
    deadline = None if limit is None else loop.time() + limit
    replies: list[Any] = []
    timer = _timeout_at(deadline)
    try:
        async with timer:
            for index, args in enumerate(commands):
                if index and deadline is not None and deadline - loop.time() < limit:
                    deadline = loop.time() + limit * _SLACK
                    timer.reschedule(deadline)
                try:
                    response = await connection.read_response(timeout=math.inf)
                except rex.ResponseError as exc:
                    replies.append(exc)
                else:
                    name = args[0]
                    if name in callbacks:
                        response = callbacks[name](response)
                        if inspect.isawaitable(response):
                            response = await response
                    replies.append(response)
    except TimeoutError:
        if not timer.expired():
            raise  # not this timer's: a response callback's own
        raise rex.TimeoutError(f"Timeout reading from {connection._host_error()}") from None
    return replies


class _NodeLink:
    """A cluster node as `exchange_steps` takes a client: its connections as the pool, its
    parser and response callbacks (the cluster client's)."""

    __slots__ = ("_node", "connection_pool", "parse_response", "response_callbacks")

    def __init__(self, node: Any) -> None:
        self._node = node
        self.connection_pool = self
        self.parse_response = node.parse_response
        self.response_callbacks = node.response_callbacks

    async def get_connection(self, *_: Any) -> Any:
        connection = self._node.acquire_connection()
        # A connection marked after a failure elsewhere on the node (redis-py 7+) reconnects.
        if getattr(connection, "should_reconnect", bool)():
            await connection.disconnect()
        return connection

    def release(self, connection: Any) -> None:
        self._node.release(connection)


async def node_exchange(node: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`exchange_steps` on one connection of ``node``, an asyncio cluster node or a standalone
    asyncio client, awaited here: the batcher's task that calls it has no runner."""
    link = _NodeLink(node) if isinstance(node, redis.asyncio.cluster.ClusterNode) else node
    return await _exchange_async(link, commands, None)


def autopipeline(client: AsyncClient, enabled: bool = True) -> None:
    """Turn auto-pipelining on or off for every pattern that uses the asyncio ``client``.

    With it on, the commands that concurrent tasks send through ``client`` in one turn of the
    event loop go out as one pipeline (one write, one round trip) rather than one by one; on a
    cluster client, one pipeline per node, each on one connection of its node. A lone call is
    still exactly one command, and nothing is ever re-sent: a lost link fails every call that
    was in flight on it (outcome unknown). It is on by default.

    Raises:
        TypeError: ``client`` is not an asyncio redis-py client, or ``enabled`` is not a bool.
    """
    if not isinstance(client, ASYNC_TYPES):
        raise TypeError(f"expected an asyncio redis-py client, got {_describe(client)}")
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    batcher_of(client, node_exchange).enabled = enabled


# A cluster client is batched when its nodes lend connections one at a time and take them back
# (`ClusterNode.release`, in recent redis-py) and it reads from primaries only: a batch goes to
# a slot's primary.
_NODE_LINKS = hasattr(redis.asyncio.cluster.ClusterNode, "release")


def _single_connection(client: Any) -> bool:
    """Whether ``client`` was made with ``single_connection_client``: every command on its one
    connection (a ``SELECT`` on it holds), which only ``execute_command`` uses (an asyncio
    client opens it on first use)."""
    return bool(
        getattr(client, "single_connection_client", False)  # asyncio
        or getattr(client, "_single_connection_client", False)  # sync
    )


def _batching(runner: Context, client: Any) -> Batcher | None:
    """The client's auto-pipeline, when the runner is asyncio and batching is on for the
    client (and it can be batched: see `_NODE_LINKS`; not a single-connection client's
    commands, which stay on its connection); else ``None``."""
    if not runner.asynchronous or _single_connection(client):
        return None
    if is_cluster(client) and not (
        _NODE_LINKS
        and not getattr(client, "read_from_replicas", False)
        and getattr(client, "load_balancing_strategy", None) is None
    ):
        return None
    batcher = batcher_of(client, node_exchange)
    return batcher if batcher.enabled else None


def pipeline_steps(effect: Pipeline, runner: Context) -> Steps[list[Any]]:
    """Every item in one pipelined round trip; the items that met ``NOSCRIPT`` are sent again
    as ``EVAL`` in a second one. A failed item's library error takes its place in the list."""
    if not runner.ready:
        yield from _initialize(runner)
    client = runner.clients[0]
    for item in effect.effects:
        if isinstance(item, Eval):
            check_slots(client, item.keys)
    batcher = _batching(runner, client)
    send = _pipelined if batcher is None else partial(_batched, batcher)
    results = yield from send(client, effect.effects, sha=True)
    for result in results:
        if isinstance(result, rex.RedisError):
            break
    else:
        return results  # the common case, with nothing to map or send again
    retry = [i for i, r in enumerate(results) if isinstance(r, rex.NoScriptError)]
    if retry:
        again = yield from send(client, [effect.effects[i] for i in retry], sha=False)
        for index, result in zip(retry, again, strict=True):
            results[index] = result
    return [_map_item(e, r) for e, r in zip(effect.effects, results, strict=True)]


def _pipelined(client: Any, effects: Sequence[Eval | Command], *, sha: bool) -> Steps[list[Any]]:
    commands = [_pipeline_args(effect, sha=sha) for effect in effects]
    with _COMMAND_ERRORS:
        if not is_cluster(client):
            return (yield from exchange_steps(client, commands))
        pipe = client.pipeline(transaction=False)
        for effect, args in zip(effects, commands, strict=True):
            pipe.execute_command(*args, **_pipeline_options(client, effect))
        return list((yield Invoke(pipe.execute, (), {"raise_on_error": False})))


def _batched(
    batcher: Batcher, client: Any, effects: Sequence[Eval | Command], *, sha: bool
) -> Steps[list[Any]]:
    """A `Pipeline`'s items through the client's auto-pipeline: they join this turn's batch,
    so the pipelines of concurrent tasks (a cache hit's ``MGET`` and ``TIME``) share one write
    with everything else sent in that turn. Replies come back in order; a lost link fails the
    whole pipeline, as it would alone. Alone in its turn (or on its cluster node), the pipeline
    is sent here, as it is without batching."""
    commands = [_pipeline_args(effect, sha=sha) for effect in effects]
    with _COMMAND_ERRORS:
        replies = yield Invoke(batcher.join, (commands,))
    if replies is None:
        return (yield from _pipelined(client, effects, sha=sha))
    results = list(replies)
    # On a cluster: the items a node did not run (MOVED, ASK, TRYAGAIN), sent again the
    # unbatched way, which follows the redirection (the others ran: they are not re-sent).
    moved = [i for i, result in enumerate(results) if isinstance(result, REDIRECTED)]
    if moved:
        again = yield from _pipelined(client, [effects[i] for i in moved], sha=sha)
        for index, result in zip(moved, again, strict=True):
            results[index] = result
    return results


def _pipeline_args(effect: Eval | Command, *, sha: bool) -> tuple[Any, ...]:
    if isinstance(effect, Command):
        return effect.args
    if sha:
        return ("EVALSHA", effect.script.sha, *_eval_args(effect))
    return ("EVAL", effect.script.source, *_eval_args(effect))


def _pipeline_options(client: Any, effect: Eval | Command) -> dict[str, Any]:
    """Route a pipelined script call on a cluster by its first key: redis-py's cluster pipeline
    (8.x) otherwise asks the server for the keys of each EVALSHA (``COMMAND GETKEYS``), one
    extra round trip per item, one after the other."""
    if isinstance(effect, Eval) and effect.keys and is_cluster(client):
        cluster: Any = client  # redis-py types the key as str; bytes work the same
        return {"target_nodes": cluster.get_node_from_key(effect.keys[0])}
    return {}


def replicated_steps(effect: Replicated, runner: Context) -> Steps[tuple[Any, int]]:
    """The write and ``WAIT`` in one pipelined round trip, on one connection (``WAIT`` counts
    the replicas that have the connection's writes so far). After ``NOSCRIPT`` both are sent
    again: ``WAIT`` must follow the write that ran."""
    if not runner.ready:
        yield from _initialize(runner)
    client = runner.clients[0]
    check_slots(client, effect.write.keys)
    items: tuple[Eval | Command, ...] = (
        effect.write,
        Command(("WAIT", effect.replicas, effect.timeout_ms)),
    )
    replies = yield from _pipelined(client, items, sha=True)
    if isinstance(replies[0], rex.NoScriptError):
        replies = yield from _pipelined(client, items, sha=False)
    reply, acked = (_map_item(item, result) for item, result in zip(items, replies, strict=True))
    for mapped in (reply, acked):
        if isinstance(mapped, BaseException):
            raise mapped
    return reply, int(acked)


def _send(
    runner: Context, client: Any, args: tuple[Any, ...], options: dict[str, Any] | None = None
) -> Steps[Any]:
    """One command on ``client``, its reply (an error reply raised): through its auto-pipeline
    (`_batching`) when other tasks send in the same turn, else in one exchange of its own.

    The exchange (`exchange_steps`) is what ``execute_command`` does without its per-call
    bookkeeping (retry wrapper, argument filtering, redis-py's own command metrics): about 15 %
    less client CPU per limiter hit. It also never re-sends, whatever the client's ``Retry``.
    A cluster client, a call with routing options and a client made with
    ``single_connection_client`` (whose one connection redis-py guards itself) keep
    ``execute_command``."""
    if options or is_cluster(client) or _single_connection(client):
        batcher = None if options else _batching(runner, client)
        send = client.execute_command if batcher is None else batcher.execute_command
        return (yield Invoke(send, args, options))
    batcher = _batching(runner, client)
    if batcher is None or batcher.alone():
        (reply,) = yield from exchange_steps(client, (args,))
        if isinstance(reply, rex.ResponseError):
            raise reply
        return reply
    return (yield Invoke(batcher.execute_command, args))


def _eval_args(effect: Eval) -> tuple[Any, ...]:
    return (len(effect.keys), *effect.keys, *effect.args)


def eval_steps(effect: Eval, runner: Context) -> Steps[Any]:
    """``EVALSHA``; on ``NOSCRIPT`` (after ``SCRIPT FLUSH`` or a restart: the script did not
    run) ``EVAL`` once, which runs the script and caches it."""
    if not runner.ready:
        yield from _initialize(runner)
    client = runner.clients[effect.node or 0]
    check_slots(client, effect.keys)
    with _SCRIPT_ERRORS:
        try:
            return (
                yield from _send(
                    runner, client, ("EVALSHA", effect.script.sha, *_eval_args(effect))
                )
            )
        except rex.NoScriptError:
            return (
                yield from _send(
                    runner, client, ("EVAL", effect.script.source, *_eval_args(effect))
                )
            )


def fcall_steps(effect: FCall, runner: Context) -> Steps[Any]:
    """``FCALL``; when the server does not know the function, load the library and call again."""
    client = runner.clients[effect.node or 0]
    check_slots(client, effect.keys)
    args = ("FCALL", effect.function, len(effect.keys), *effect.keys, *effect.args)
    options = _fcall_options(client, effect.keys)
    with _SCRIPT_ERRORS:
        try:
            return (yield from _send(runner, client, args, options))
        except rex.ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
        yield Invoke(client.execute_command, effect.library.load_command().args)
        return (yield from _send(runner, client, args, options))


def _fcall_options(client: Any, keys: Sequence[KeyT]) -> dict[str, Any]:
    """Route FCALL on a cluster by its first key; otherwise redis-py asks the server for the
    keys (``COMMAND GETKEYS``), an extra round trip per call."""
    if keys and is_cluster(client):
        cluster: Any = client  # redis-py types the key as str; bytes work the same
        return {"target_nodes": cluster.get_node_from_key(keys[0])}
    return {}


def command_steps(effect: Command, runner: Context) -> Steps[Any]:
    if not runner.ready:
        yield from _initialize(runner)
    with _COMMAND_ERRORS:
        client = runner.clients[effect.node or 0]
        options = _command_options(client, effect.args)
        if effect.args and str(effect.args[0]).upper() in BLOCKING:
            return (yield Invoke(client.execute_command, effect.args, options))
        return (yield from _send(runner, client, tuple(effect.args), options))


def _command_options(client: Any, args: Sequence[Any]) -> dict[str, Any] | None:
    """Send a plain ``PUBLISH`` on a cluster to the client's default node, every time.

    redis-py would send it to the node owning the channel's slot. A message run on another node
    than the subscriber's reaches it over the cluster bus a moment later than one run on its own
    node, so one publisher's messages to two channels could overtake each other, and one
    published before a subscription was confirmed could still reach it (both seen under load).
    `Subscriber` links to the same default node first, so a client's publishes and
    subscriptions meet there.
    """
    if args and args[0] == "PUBLISH" and is_cluster(client):
        return {"target_nodes": "default-node"}  # RedisCluster.DEFAULT_NODE, sync and asyncio
    return None
