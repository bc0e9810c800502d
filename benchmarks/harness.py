"""The measuring engine: interleaved per-call ratios to GET, client CPU, server µs, bytes, commands.

One harness process starts its own server (nobody else uses it), pins itself to one CPU and
every thread of the server to another (when there are two), and measures each contender of a
group in interleaved rounds: round r runs every contender ``calls`` times in a rotated order, so
a burst of machine noise hits all of them alike; the per-call ratio is the median over rounds of
(time per call / the GET baseline's time per call in the same round). Around every timed window
it reads the server's ``INFO stats cpu commandstats`` (outside the timed part), which gives:

- server µs/op: ``usec`` of the commands the client sent at top level. ``EVALSHA``/``EVAL``/
  ``FCALL`` and ``EXEC`` already include the commands they run, which commandstats also lists
  under their own names; those nested calls are left out so nothing is counted twice. Which
  commands are nested is learnt from a ``MONITOR`` sample (`CommandCounter`): ``[0 lua]``
  lines and commands between ``MULTI`` and ``EXEC``. It is execution time only (no socket I/O).
- server CPU µs/op: the server process's ``used_cpu_user + used_cpu_sys``: all it spent,
  parsing and socket I/O included, minus the harness's own ``INFO`` calls (calibrated).
- request bytes/op: the server's ``total_net_input_bytes``: bytes the clients wrote to their
  sockets, counted by the server, so no client is touched; minus the ``INFO`` request itself.
- ops per server read, per node: its top-level commands (commandstats, as above) per operation
  and per ``total_reads_processed`` (socket reads), less the ``INFO``'s read and the handshake
  of connections opened in the window: the batch size each node saw.

A cluster group (``Group.topology``) runs on a `ClusterEnv`: the same measures, the server ones
read from every master and summed (ops per read stays per master).

A separate sample after warm-up counts, per operation, the top-level commands (``MONITOR``) and
the round trips: calls of redis-py's ``send_packed_command`` (sync and asyncio), one per socket
write burst after which the client waits for replies; a pipeline is one. Client CPU µs/op is
the ``time.process_time`` delta of the timed windows (every thread of this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import statistics
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.connection

from redis_patterns import EmbeddedCluster, EmbeddedServer
from redis_patterns.testing.counter import HANDSHAKE, CommandCounter

Op = Callable[[], object]
AsyncOp = Callable[[], Awaitable[object]]
Mode = Literal["sync", "async", "concurrent"]
Kind = Literal["floor", "ours", "peer"]
Topology = Literal["standalone", "cluster"]

# Scripts and transactions: their commandstats usec includes the commands they run.
CONTAINERS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro", "exec"})


@dataclass(frozen=True)
class Settings:
    """How much to measure: ``quick`` for a smoke run, the default for the docs."""

    rounds: int = 15
    calls: int = 300
    warmup: int = 50
    sample: int = 20  # operations under MONITOR for commands / round trips
    tasks: int = 100  # concurrent asyncio tasks
    concurrent_calls: int = 2000  # operations per concurrent round (all tasks together)
    concurrent_rounds: int = 7
    probes: bool = True
    scans: bool = True
    sizes: tuple[int, ...] = (100, 10_000, 100_000, 1_000_000)
    members: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    costs: tuple[int, ...] = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
    scan_rounds: int = 3
    scan_budget: float = 0.6  # seconds per scan cell and round, at least 3 calls

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rounds=3,
            calls=40,
            warmup=10,
            sample=10,
            concurrent_calls=400,
            concurrent_rounds=2,
            sizes=(100, 1_000_000),
            members=(1_000,),
            costs=(1, 1_000),
            scan_rounds=1,
            scan_budget=0.1,
        )


class Env:
    """What a contender's factory gets: the server, fresh clients, unique names."""

    def __init__(self, server: EmbeddedServer, settings: Settings) -> None:
        self.server = server
        self.settings = settings
        self.host = "127.0.0.1"
        self.port = int(server.port or 0)
        self.url = server.url
        self.nodes = [(self.host, self.port)]  # the servers the operations reach
        self._clients: list[Any] = []
        self._closers: list[Callable[[], object]] = []
        self._async_closers: list[Callable[[], Awaitable[object]]] = []

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain redis-py client (defaults, like a user's), closed at the end."""
        return self.node_client(self.host, self.port, **kwargs)

    def node_client(self, host: str, port: int, **kwargs: Any) -> redis.Redis:
        client = redis.Redis(host=host, port=port, **kwargs)
        self._clients.append(client)
        return client

    def aclient(self, **kwargs: Any) -> redis.asyncio.Redis:
        return self.node_aclient(self.host, self.port, **kwargs)

    def node_aclient(self, host: str, port: int, **kwargs: Any) -> redis.asyncio.Redis:
        client = redis.asyncio.Redis(host=host, port=port, **kwargs)
        self.on_aclose(client.aclose)
        return client

    def name(self, label: str) -> str:
        """A unique name (letters, digits, '-' and '.': valid everywhere)."""
        slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
        return f"bench-{uuid.uuid4().hex[:8]}-{slug}"

    def on_close(self, closer: Callable[[], object]) -> None:
        self._closers.append(closer)

    def on_aclose(self, closer: Callable[[], Awaitable[object]]) -> None:
        self._async_closers.append(closer)

    async def aclose_all(self) -> None:
        while self._async_closers:
            with contextlib.suppress(Exception):
                await self._async_closers.pop()()

    def close(self) -> None:
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop()()
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()


class ClusterEnv(Env):
    """An `Env` on an `EmbeddedCluster`: its masters are the nodes, `acluster` makes clients.

    ``client()`` and ``url`` still name one node (the first master), for what needs one
    server; ``cluster_url`` lists every master, as the peers' cluster URLs do.
    """

    def __init__(self, cluster: EmbeddedCluster, settings: Settings) -> None:
        masters = cluster.masters()
        super().__init__(masters[0], settings)
        self.cluster = cluster
        self.nodes = [(self.host, int(m.port or 0)) for m in masters]
        self.cluster_url = ",".join(f"{h}:{p}" for h, p in self.nodes)

    def acluster(self, **kwargs: Any) -> redis.asyncio.cluster.RedisCluster:
        """An asyncio cluster client as `EmbeddedCluster.client` configures it (like
        `redis_patterns.connect`'s: finite timeouts, no re-sending), closed at the end."""
        client = self.cluster.client(asyncio=True, **kwargs)
        self.on_aclose(client.aclose)
        return client

    def node_of(self, key: str) -> tuple[str, int]:
        """The address of the master serving ``key`` now (asks the servers)."""
        return (self.host, int(self.cluster.master_of(key).port or 0))


@dataclass(frozen=True)
class Contender:
    """One operation of one library. ``make`` builds it (an ImportError: not installed)."""

    name: str
    kind: Kind
    make: Callable[[Env], Any]  # sync: -> Op; async modes: async -> AsyncOp
    note: str = ""
    probe: Callable[[Env], tuple[str, bool]] | None = None  # -> (shown result, correct?)
    ops_per_call: int = 1  # a pipelined floor does many operations per call
    tasks: int | None = None  # concurrent mode: tasks for this one (default Settings.tasks)


@dataclass(frozen=True)
class Group:
    key: str
    title: str
    mode: Mode
    baseline: str  # the contender every ratio divides by
    contenders: tuple[Contender, ...]
    note: str = ""
    topology: Topology = "standalone"  # "cluster": run on a 3-master cluster (`ClusterEnv`)


@dataclass
class Row:
    """The numbers of one contender (``None``: not measured)."""

    name: str
    kind: str
    status: str = "ok"
    note: str = ""
    ratio: float | None = None
    ratio_lo: float | None = None  # lowest and highest per-round ratio
    ratio_hi: float | None = None
    wall_us: float | None = None  # median per round
    client_us: float | None = None
    server_us: float | None = None
    server_cpu_us: float | None = None
    bytes: float | None = None
    commands: float | None = None
    round_trips: float | None = None
    client_bytes: float | None = None  # bytes redis-py was asked to write (cross-check)
    names: str = ""
    inside: str = ""
    throughput: float | None = None  # concurrent mode: operations/s, median per round
    ops_per_read: list[float] | None = None  # per node (`Env.nodes` order): its batch size
    probe: str = ""
    correct: bool | None = None


@dataclass
class GroupResult:
    key: str
    title: str
    mode: str
    baseline: str
    note: str
    topology: str = "standalone"
    rows: list[Row] = field(default_factory=list)


# --- server statistics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    calls: dict[str, int]
    usec: dict[str, int]
    cpu: float
    net_in: int
    reads: tuple[int, ...] = ()  # ``total_reads_processed`` per node: socket reads it served
    node_calls: tuple[dict[str, int], ...] = ()  # commandstats calls per node


class ServerStats:
    """``INFO stats cpu commandstats`` from a dedicated connection to each of the env's nodes
    (one, or a cluster's masters), summed over the nodes but the reads, with the INFOs' cost."""

    def __init__(self, env: Env) -> None:
        self._clients = [env.node_client(host, port) for host, port in env.nodes]
        self.info_bytes = 0
        self.info_cpu = 0.0
        self.info_reads: tuple[int, ...] = (0,) * len(self._clients)

    def snapshot(self) -> Snapshot:
        calls: Counter[str] = Counter()
        usec: Counter[str] = Counter()
        cpu, net_in = 0.0, 0
        reads: list[int] = []
        node_calls: list[dict[str, int]] = []
        for client in self._clients:
            info = client.execute_command("INFO", "stats", "cpu", "commandstats")
            node_calls.append({})
            for key, value in info.items():
                if key.startswith("cmdstat_") and isinstance(value, dict):
                    node_calls[-1][key[8:]] = int(value["calls"])
                    calls[key[8:]] += int(value["calls"])
                    usec[key[8:]] += int(value["usec"])
            cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            net_in += int(info["total_net_input_bytes"])
            reads.append(int(info["total_reads_processed"]))
        return Snapshot(dict(calls), dict(usec), cpu, net_in, tuple(reads), tuple(node_calls))

    def calibrate(self, windows: int = 7) -> None:
        """What a window with no operation shows: the INFO requests' bytes and reads (the
        closing INFO's own), and the CPU."""
        cpus, sizes, reads = [], [], []
        for _ in range(windows):
            before = self.snapshot()
            after = self.snapshot()
            cpus.append(after.cpu - before.cpu)
            sizes.append(after.net_in - before.net_in)
            reads.append([a - b for a, b in zip(after.reads, before.reads, strict=True)])
        self.info_cpu = statistics.median(cpus)
        self.info_bytes = min(sizes)
        self.info_reads = tuple(min(column) for column in zip(*reads, strict=True))


@dataclass
class Tally:
    """Sums over a contender's timed windows."""

    ops: int = 0
    windows: int = 0
    wall: list[float] = field(default_factory=list)  # seconds per op, per window
    cpu: float = 0.0
    server_usec: float = 0.0
    server_cpu: float = 0.0
    net_in: int = 0
    reads: list[int] = field(default_factory=list)  # per node
    node_top: list[float] = field(default_factory=list)  # top-level commands per node

    def add(
        self,
        ops: int,
        wall: float,
        cpu: float,
        before: Snapshot,
        after: Snapshot,
        top_per_op: dict[str, float],
    ) -> None:
        self.ops += ops
        self.windows += 1
        self.wall.append(wall / ops)
        self.cpu += cpu
        self.server_usec += top_level_usec(before, after, top_per_op, ops)
        self.server_cpu += after.cpu - before.cpu
        self.net_in += after.net_in - before.net_in
        # A connection opened in the window reads its handshake command by command: not the
        # operations' reads (ops per read is the batch size each node saw).
        reads = [
            a - b - sum(n - nb.get(name, 0) for name, n in na.items() if _handshake(name))
            for a, b, nb, na in zip(
                after.reads, before.reads, before.node_calls, after.node_calls, strict=True
            )
        ]
        self.reads = _plus(self.reads, reads)
        self.node_top = _plus(self.node_top, top_level_calls(before, after, top_per_op, ops))


def _handshake(name: str) -> bool:
    return name.split("|", 1)[0].upper() in HANDSHAKE


def _plus(sums: list[Any], values: Sequence[Any]) -> list[Any]:
    """Per-node sums: ``values`` added to ``sums`` (empty before the first window)."""
    return [a + b for a, b in zip(sums, values, strict=True)] if sums else list(values)


def top_level_usec(
    before: Snapshot, after: Snapshot, top_per_op: dict[str, float], ops: int
) -> float:
    """Usec of the commands sent at top level in a window, nested calls left out.

    For each command name, the share of its calls in the window that were top-level (from the
    MONITOR sample, scaled to ``ops``) is the share of its usec counted; a script's or EXEC's
    usec already holds the nested calls'.
    """
    total = 0.0
    for name, usec in after.usec.items():
        calls = after.calls[name] - before.calls.get(name, 0)
        top = top_per_op.get(name.split("|", 1)[0], 0.0) * ops
        if calls > 0 and top > 0:
            total += (usec - before.usec.get(name, 0)) * min(1.0, top / calls)
    return total


def top_level_calls(
    before: Snapshot, after: Snapshot, top_per_op: dict[str, float], ops: int
) -> list[float]:
    """Per node, the commands sent at top level in a window (as `top_level_usec` shares a
    command's calls between top level and nested): what the node's socket reads carried."""
    shares = {}
    for name, calls in after.calls.items():
        window = calls - before.calls.get(name, 0)
        top = top_per_op.get(name.split("|", 1)[0], 0.0) * ops
        if window > 0 and top > 0:
            shares[name] = min(1.0, top / window)
    return [
        sum(
            (n_after.get(name, 0) - n_before.get(name, 0)) * share for name, share in shares.items()
        )
        for n_before, n_after in zip(before.node_calls, after.node_calls, strict=True)
    ]


# --- round trips: redis-py's writes --------------------------------------------------------------


class WriteMeter:
    """Counts redis-py's ``send_packed_command`` calls and their bytes while active (sync and
    asyncio, every client of this process): one call is one write burst, then replies are read.
    Used only in the sample, never while timing."""

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0

    def _count(self, command: Any) -> None:
        self.writes += 1
        if isinstance(command, str):
            self.bytes += len(command.encode())
        elif isinstance(command, bytes | bytearray | memoryview):
            self.bytes += len(command)
        else:
            self.bytes += sum(len(item) for item in command)

    @contextlib.contextmanager
    def active(self) -> Iterator[WriteMeter]:
        sync_cls = redis.connection.AbstractConnection
        async_cls = redis.asyncio.connection.AbstractConnection
        sync_send: Any = sync_cls.send_packed_command
        async_send: Any = async_cls.send_packed_command
        meter = self

        def counted(self: Any, command: Any, check_health: bool = True) -> None:
            meter._count(command)
            sync_send(self, command, check_health)

        async def acounted(self: Any, command: Any, check_health: bool = True) -> None:
            meter._count(command)
            await async_send(self, command, check_health)

        sync_cls.send_packed_command = counted  # type: ignore[method-assign]
        async_cls.send_packed_command = acounted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            sync_cls.send_packed_command = sync_send  # type: ignore[method-assign]
            async_cls.send_packed_command = async_send  # type: ignore[method-assign]


@dataclass
class Sample:
    commands: float
    round_trips: float | None
    client_bytes: float | None
    names: str
    inside: str
    top_per_op: dict[str, float]


def _sample(counter: CommandCounter, meter: WriteMeter, ops: int) -> Sample:
    top: Counter[str] = Counter()
    nested: Counter[str] = Counter()
    in_multi: set[str] = set()
    for command in counter.all:
        name = command.name
        if name in HANDSHAKE and command.client != "lua":
            continue
        queued = command.client in in_multi and name not in ("EXEC", "DISCARD")
        if command.client == "lua" or queued:
            nested[name] += 1
            continue
        if name == "MULTI":
            in_multi.add(command.client)
        elif name in ("EXEC", "DISCARD"):
            in_multi.discard(command.client)
        top[name] += 1
    commands = len(counter.commands) / ops  # what the client sent (MULTI's queue included)
    # No write seen although commands were: not a redis-py client, round trips unknown.
    unknown = meter.writes == 0 and commands > 0
    return Sample(
        commands=commands,
        round_trips=None if unknown else meter.writes / ops,
        client_bytes=None if unknown else meter.bytes / ops,
        names=_names(top, ops),
        inside=_names(nested, ops),
        top_per_op={name.lower(): n / ops for name, n in top.items()},
    )


def _names(counts: Counter[str], ops: int) -> str:
    return " ".join(
        f"{name}" if n == ops else f"{name}x{n / ops:g}" for name, n in sorted(counts.items())
    )


# --- running ---------------------------------------------------------------------------------


class NotMeasured(Exception):
    """Raised by a factory whose contender cannot run here; the message says why."""


def _error(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return f"not installed ({exc.name or exc})"
    if isinstance(exc, NotMeasured):
        return f"not measured: {exc}"
    line = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"error: {line[:160]}"


def _run_probe(contender: Contender, env: Env, row: Row) -> None:
    if contender.probe is None or not env.settings.probes:
        return
    try:
        row.probe, row.correct = contender.probe(env)
    except Exception as exc:
        row.probe, row.correct = _error(exc), None


class Rounds:
    """The interleaved rounds of one group: which contender runs next, and the tallies.

    Iterating yields contender names, round after round, each round in an order rotated by
    one; the caller runs the operations inside `window`, which times them (perf_counter and
    process_time, nothing else inside) and reads the server's statistics around them.
    """

    def __init__(
        self, names: Sequence[str], rounds: int, stats: ServerStats, samples: dict[str, Sample]
    ) -> None:
        self.names = list(names)
        self.rounds = rounds
        self.stats = stats
        self.samples = samples
        self.tallies = {name: Tally() for name in self.names}
        self.per_round: list[dict[str, float]] = []  # seconds per op, per round and contender

    def __iter__(self) -> Iterator[str]:
        for index in range(self.rounds):
            self.per_round.append({})
            shift = index % len(self.names) if self.names else 0
            yield from self.names[shift:] + self.names[:shift]

    @contextlib.contextmanager
    def window(self, name: str, ops: int) -> Iterator[None]:
        before = self.stats.snapshot()
        c0, t0 = time.process_time(), time.perf_counter()
        yield
        t1, c1 = time.perf_counter(), time.process_time()
        after = self.stats.snapshot()
        self.tallies[name].add(ops, t1 - t0, c1 - c0, before, after, self.samples[name].top_per_op)
        if self.per_round:
            self.per_round[-1][name] = (t1 - t0) / ops

    def finish(self, rows: dict[str, Row], baseline: str) -> None:
        """Fill in every measured row: per-op sums, the sample's counts, the ratios."""
        stats = self.stats
        for name, row in rows.items():
            tally, sample = self.tallies[name], self.samples[name]
            ops = tally.ops
            row.wall_us = statistics.median(tally.wall) * 1e6
            row.client_us = tally.cpu / ops * 1e6
            row.server_us = tally.server_usec / ops
            idle = tally.windows * stats.info_cpu
            row.server_cpu_us = max(0.0, tally.server_cpu - idle) / ops * 1e6
            row.bytes = max(0, tally.net_in - tally.windows * stats.info_bytes) / ops
            row.commands = sample.commands
            row.round_trips = sample.round_trips
            row.client_bytes = sample.client_bytes
            row.names = sample.names
            row.inside = sample.inside
            idle_reads = [tally.windows * n for n in stats.info_reads]
            reads = [max(0, r - i) for r, i in zip(tally.reads, idle_reads, strict=True)]
            per_op = sum(sample.top_per_op.values())  # top-level commands per operation
            if reads and per_op:
                row.ops_per_read = [
                    t / per_op / r if r else 0.0 for t, r in zip(tally.node_top, reads, strict=True)
                ]
            ratios = [r[name] / r[baseline] for r in self.per_round if name in r and baseline in r]
            if ratios:
                row.ratio = statistics.median(ratios)
                row.ratio_lo, row.ratio_hi = min(ratios), max(ratios)


def _start(group: Group) -> tuple[GroupResult, dict[str, Row], dict[str, Sample]]:
    result = GroupResult(
        group.key, group.title, group.mode, group.baseline, group.note, group.topology
    )
    return result, {}, {}


def _measured_row(result: GroupResult, contender: Contender) -> Row:
    row = Row(contender.name, contender.kind, note=contender.note)
    result.rows.append(row)
    return row


def run_sync_group(group: Group, env: Env, stats: ServerStats) -> GroupResult:
    settings = env.settings
    result, rows, samples = _start(group)
    ops: dict[str, Op] = {}
    for contender in group.contenders:
        row = _measured_row(result, contender)
        try:
            op = contender.make(env)
            for _ in range(settings.warmup):
                op()
            meter = WriteMeter()
            with CommandCounter(env.nodes) as seen, meter.active():
                for _ in range(settings.sample):
                    op()
            samples[contender.name] = _sample(seen, meter, settings.sample)
            ops[contender.name] = op
            rows[contender.name] = row
        except Exception as exc:
            row.status = _error(exc)
    rounds = Rounds(list(ops), settings.rounds, stats, samples)
    calls = settings.calls
    for name in rounds:
        op = ops[name]
        with rounds.window(name, calls):
            for _ in range(calls):
                op()
    rounds.finish(rows, group.baseline)
    for contender in group.contenders:
        if contender.name in rows:
            _run_probe(contender, env, rows[contender.name])
    env.close()
    return result


async def _concurrently(op: AsyncOp, tasks: int, calls: int) -> None:
    if tasks == 1:  # no task of its own: as sequential code awaits
        for _ in range(calls):
            await op()
        return
    each, extra = divmod(calls, tasks)

    async def worker(n: int) -> None:
        for _ in range(n):
            await op()

    await asyncio.gather(*(worker(each + (i < extra)) for i in range(tasks)))


async def run_async_group(group: Group, env: Env, stats: ServerStats) -> GroupResult:
    """Sequential awaits (``async``) or ``tasks`` concurrent tasks (``concurrent``)."""
    settings = env.settings
    concurrent = group.mode == "concurrent"
    result, rows, samples = _start(group)
    ops: dict[str, tuple[AsyncOp, int, int, int]] = {}  # op, tasks, calls, operations per round
    for contender in group.contenders:
        row = _measured_row(result, contender)
        tasks = (contender.tasks or settings.tasks) if concurrent else 1
        calls = settings.concurrent_calls if concurrent else settings.calls
        calls = max(tasks, calls // contender.ops_per_call)
        try:
            op = await contender.make(env)
            await _concurrently(op, tasks, max(tasks, settings.warmup))
            if concurrent:  # tasks that queued behind a cluster client's first slot-map
                # read did not all open a connection: a second pass opens what they need
                await _concurrently(op, tasks, max(tasks, settings.warmup))
            meter = WriteMeter()
            sample_calls = tasks if concurrent else settings.sample
            with CommandCounter(env.nodes) as seen, meter.active():
                await _concurrently(op, tasks, sample_calls)
            ops_done = sample_calls * contender.ops_per_call
            samples[contender.name] = _sample(seen, meter, ops_done)
            ops[contender.name] = (op, tasks, calls, calls * contender.ops_per_call)
            rows[contender.name] = row
        except Exception as exc:
            row.status = _error(exc)
    count = settings.concurrent_rounds if concurrent else settings.rounds
    rounds = Rounds(list(ops), count, stats, samples)
    for name in rounds:
        op, tasks, calls, done = ops[name]
        with rounds.window(name, done):
            await _concurrently(op, tasks, calls)
    rounds.finish(rows, group.baseline)
    if concurrent:
        for name, row in rows.items():
            row.throughput = 1 / statistics.median(rounds.tallies[name].wall)
    await env.aclose_all()
    env.close()
    return result


def run_group(group: Group, env: Env, stats: ServerStats) -> GroupResult:
    if group.mode == "sync":
        return run_sync_group(group, env, stats)
    return asyncio.run(run_async_group(group, env, stats))


# --- pinning -----------------------------------------------------------------------------------


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


@contextlib.contextmanager
def pinned(server_pid: int | None, enabled: bool = True) -> Iterator[str]:
    """Pin this process to one CPU and every server thread to another (as ``taskset -a``);
    yields a sentence saying what was done. The previous affinity is restored on exit."""
    if not hasattr(os, "sched_setaffinity") or server_pid is None or not enabled:
        yield "not pinned" + ("" if enabled else " (pinning off)")
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield f"not pinned: only {len(cpus)} CPU available"
        return
    previous = {tid: os.sched_getaffinity(tid) for tid in _threads(os.getpid())}
    client_cpu, server_cpu = cpus[0], cpus[1]
    server_threads = _threads(server_pid)
    for tid in previous:
        os.sched_setaffinity(tid, {client_cpu})
    for tid in server_threads:
        os.sched_setaffinity(tid, {server_cpu})
    try:
        yield (
            f"client process pinned to CPU {client_cpu}, the server (all its "
            f"{len(server_threads)} threads) to CPU {server_cpu}, with sched_setaffinity"
        )
    finally:
        for tid, mask in previous.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def pin_like(pids: Sequence[int | None], model: int | None) -> None:
    """Give every thread of ``pids`` the CPUs of process ``model`` (the standalone server, as
    `pinned` left it): servers started later, e.g. a cluster's nodes, inherit this process's
    CPU otherwise, and would compete with the client for it."""
    if not hasattr(os, "sched_setaffinity") or model is None:
        return
    mask = os.sched_getaffinity(model)
    for pid in pids:
        for tid in _threads(pid) if pid is not None else ():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def server_label(env: Env) -> str:
    with env.server.client() as client:
        info = client.info("server")
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info['redis_version']}"


def as_dict(results: Sequence[GroupResult]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in results]


def collect_garbage() -> None:
    """Between groups: what one group left behind is not collected during the next."""
    gc.collect()
