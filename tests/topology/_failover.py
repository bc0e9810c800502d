"""The failover harness: every pattern's workload, from several processes, through one fault.

A `Scenario` is a topology (a replicated cluster or a Sentinel primary with 2 replicas), a server
(Valkey or Redis 7), a fault (a graceful failover, a SIGKILL of the primary, a live slot move)
and a client policy (ordinary long-lived clients, or the mitigations on). `run_scenario` starts
the topology, a separate server (the "database" and fence store no failover touches), and
`PROCS` worker processes; each worker runs one thread per workload (a pattern's `Workload`),
recording every operation into one `History` file. Once every workload has warmed up the fault
is injected; once every workload has made progress after it, the workers stop, and each
workload's ``final`` reads what the topology holds now. A pattern's test then judges its part of
the `Run` with the `redis_patterns.testing.history` checkers.

All keys of every workload hash into `SLOTS`, which one cluster master owns: that master is the
one failed over or killed, and `SLOTS` are the slots moved.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from redis_patterns import EmbeddedCluster, EmbeddedServer, RedisPatternsError, sentinel_client
from redis_patterns._clients import safe_options
from redis_patterns.testing import Event, History, Promotion, SentinelTopology
from redis_patterns.testing.history import monotonic

PROCS = 3  # worker processes per scenario
SLOTS = range(200, 232)  # every workload's keys hash here: master 0's slots, the ones moved
BOUND = 30.0  # seconds any phase may take before the scenario fails
WARM_UP = 5  # progress operations per process before the fault
AFTER = 5  # and after the topology settled


@dataclass(frozen=True)
class Scenario:
    """One topology x server x fault x client policy."""

    topology: str  # "cluster" | "sentinel"
    server: str  # "valkey" | "redis7"
    fault: str  # "failover" | "kill" | "move"
    policy: str = "pooled"  # "pooled": ordinary long-lived clients; "mitigated": see docs

    @property
    def id(self) -> str:
        return f"{self.topology}-{self.server}-{self.fault}-{self.policy}"

    @property
    def mitigated(self) -> bool:
        return self.policy == "mitigated"

    @property
    def graceful_sentinel(self) -> bool:
        return self.topology == "sentinel" and self.fault == "failover"


@dataclass(frozen=True)
class Target:
    """How a worker process builds its clients (picklable)."""

    kind: str  # "cluster" | "sentinel"
    addresses: tuple[tuple[str, int], ...]  # cluster nodes, or the Sentinels
    service: str = ""
    follow: bool = False  # the mitigated Sentinel client (re-resolves the primary)

    def client(self) -> Any:
        """A client as an application holds one: built once, used for the whole run."""
        if self.kind == "cluster":
            nodes = [redis.cluster.ClusterNode(h, p) for h, p in self.addresses]
            options = safe_options({}, asyncio=False, cluster=True)
            return redis.cluster.RedisCluster(startup_nodes=nodes, **options)
        options = safe_options({}, asyncio=False, cluster=False)
        if self.follow:
            return sentinel_client(list(self.addresses), self.service, **options)
        manager = redis.sentinel.Sentinel(
            list(self.addresses), sentinel_kwargs={"socket_timeout": 1.0}
        )
        return manager.master_for(self.service, **options)


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker process runs (picklable)."""

    module: str  # where the workloads live (the test module's import name)
    workloads: tuple[str, ...]
    target: Target
    aux: tuple[str, int]
    proc: int
    history: str
    stop: str
    names: dict[str, Any]
    options: dict[str, Any]
    deadline: float


class Ctx:
    """What a workload thread gets: its process, clients, names, the history, the stop flag."""

    def __init__(self, config: WorkerConfig, workload: str) -> None:
        self.config = config
        self.workload = workload
        self.proc = config.proc
        self.procs = PROCS
        self.names: Any = config.names.get(workload)
        self.options: dict[str, Any] = config.options
        self.history = History(config.history)
        self._stop = config.stop
        self._clients: list[Any] = []

    def stopping(self) -> bool:
        return os.path.exists(self._stop) or time.monotonic() > self.config.deadline

    def client(self) -> Any:
        """A new long-lived client on the topology (closed when the workload returns)."""
        made = self.config.target.client()
        self._clients.append(made)
        return made

    def aux_client(self) -> redis.Redis:
        """A client on the separate server (database, fence store): never failed over."""
        host, port = self.config.aux
        made = redis.Redis(host, port, socket_timeout=5.0, retry=Retry(NoBackoff(), 0))
        self._clients.append(made)
        return made

    def name(self, role: str = "") -> str:
        return f"p{self.proc}{'/' + role if role else ''}"

    def op(
        self, op: str, fn: Callable[..., Any], *args: Any, value: Any = None, role: str = ""
    ) -> Any:
        """Run ``fn(*args)`` as one operation ``op`` of this workload; errors are recorded,
        not raised.

        An error of the library (a `RedisPatternsError`) or of redis-py (a plain command's) is
        recorded as ``info`` (its outcome unknown) with its type, and the workload carries on
        after a short pause; it returns `FAILED`. ``fn``'s result is recorded as the value
        when ``value`` is None.
        """
        started = self.history.invoke(f"{self.workload}:{op}", self.name(role), value)
        try:
            result = fn(*args)
        except (RedisPatternsError, redis.RedisError) as exc:
            started.info({"error": type(exc).__name__, "message": str(exc)[:200], "v": value})
            time.sleep(0.01)
            return FAILED
        started.ok(result if value is None else value)
        return result

    def close(self) -> None:
        for made in self._clients:
            with contextlib.suppress(Exception):
                made.close()


FAILED: Any = type("Failed", (), {"__repr__": lambda self: "FAILED"})()
"""What `Ctx.op` returns for an operation that raised."""


def run_worker(config: WorkerConfig) -> list[str]:
    """A worker process: one thread per workload until the stop file appears; returns the
    tracebacks of workloads that crashed (a crash fails the scenario)."""
    import importlib

    module = importlib.import_module(config.module)
    crashes: list[str] = []

    def run(workload: str) -> None:
        ctx = Ctx(config, workload)
        try:
            module.WORKLOADS[workload].work(ctx)
        except BaseException:
            crashes.append(f"{workload} in p{config.proc}:\n{traceback.format_exc()}")
        finally:
            ctx.close()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in config.workloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1.0, config.deadline - time.monotonic() + 10))
    crashes += [
        f"{w} in p{config.proc} did not stop"
        for w, t in zip(config.workloads, threads, strict=True)
        if t.is_alive()
    ]
    return crashes


# --- the main process -----------------------------------------------------------------------


@dataclass
class Run:
    """What one scenario did: the history, the fault's timing, and each workload's final state."""

    scenario: Scenario
    history: list[Event]
    fault_at: float  # when the fault was injected (CLOCK_MONOTONIC)
    settled_at: float  # when the topology agreed again
    promotion: Promotion | None
    names: dict[str, Any] = field(default_factory=dict)
    finals: dict[str, Any] = field(default_factory=dict)
    stopped_at: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    synced_at: float = 0.0  # everything acknowledged before this was on every replica
    # Sentinel only: another primary than the promoted one at the end (an unplanned second
    # failover, which the loss window does not allow for): the run cannot be judged.
    second_failover: bool = False

    def events(self, workload: str, op: str | None = None) -> list[Event]:
        """The events of ``workload`` (and of its ``op``), ordered by invocation."""
        prefix = f"{workload}:" if op is None else f"{workload}:{op}"
        return [
            e for e in self.history if (e.op.startswith(prefix) if op is None else e.op == prefix)
        ]

    def errors(self, workload: str) -> dict[str, int]:
        """Errors by type (``info`` events), for the report."""
        return dict(
            collections.Counter(
                e.value["error"] for e in self.events(workload) if e.status == "info"
            )
        )

    @property
    def window(self) -> tuple[float, float]:
        """From the fault until the workers stopped."""
        return (self.fault_at, self.stopped_at)


class Workload:
    """A pattern's part of a scenario; subclasses set ``name`` and ``progress`` and override."""

    name = ""
    progress = ""  # the op whose ok events count as progress
    roles = 1  # threads per worker process

    def names(self, scenario: Scenario) -> Any:
        """Names of the keys this workload uses (chosen so they hash into `SLOTS`)."""
        return None

    def setup(self, client: Any, aux: redis.Redis, names: Any) -> None:
        """Prepare the topology (in the main process, before the workers start)."""

    def work(self, ctx: Ctx) -> None:
        raise NotImplementedError

    def final(self, client: Any, aux: redis.Redis, names: Any, events: list[Event]) -> Any:
        """What the topology holds once the workers stopped (read from the current primary);
        ``events`` are this workload's."""
        return None


def slot_name(stem: str, keys: Callable[[str], Iterable[bytes | str]]) -> str:
    """The first ``stem-i`` whose keys all hash into `SLOTS`."""
    for index in range(2_000_000):
        name = f"{stem}-{index}"
        if all(_slot(k) in SLOTS for k in keys(name)):
            return name
    raise AssertionError(f"no name for {stem} in {SLOTS}")


def _slot(key: bytes | str) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def offline() -> redis.Redis:
    """A client that is never used for I/O: to build pattern objects and read their keys."""
    global _OFFLINE
    if _OFFLINE is None:
        _OFFLINE = redis.Redis(port=1, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
    return _OFFLINE


_OFFLINE: redis.Redis | None = None


@contextlib.contextmanager
def topology(scenario: Scenario, binary: str | None) -> Iterator[Any]:
    config: dict[str, str | int] = {}
    if scenario.mitigated:
        # The old primary refuses writes once it has no replica left (the promoted one left
        # at once, the other once Sentinel reconfigured it): see docs/cluster.md.
        config = {"min-replicas-to-write": 1, "min-replicas-max-lag": 5}
    if scenario.topology == "cluster":
        with EmbeddedCluster(3, binary, replicas=1, config=config) as cluster:
            yield cluster
    else:
        # 2 s of silence before a Sentinel calls a primary down, not the fixture's 1 s: on a
        # loaded 2-core machine a freshly promoted primary (busy syncing its new replica) was
        # once judged down too, and a second, unplanned failover lost what it had taken.
        with SentinelTopology(binary=binary, config=config, down_after=2.0) as sentinel:
            yield sentinel


def target_of(scenario: Scenario, topo: Any) -> Target:
    if scenario.topology == "cluster":
        return Target("cluster", tuple(topo.startup_nodes))
    return Target(
        "sentinel",
        tuple(topo.sentinel_addresses),
        topo.service,
        follow=scenario.mitigated,
    )


def authoritative(scenario: Scenario, topo: Any) -> Any:
    """A client on what serves the data now (the new primary, not a demoted one)."""
    if scenario.topology == "cluster":
        return topo.client(socket_timeout=5.0)
    return topo.current_primary().client(socket_timeout=5.0)


def _progress(history: list[Event], workloads: Iterable[Workload], since: float) -> dict[str, int]:
    """Per workload, the fewest progress ops completed ok by any one process since ``since``."""
    counts: dict[str, collections.Counter[str]] = {w.name: collections.Counter() for w in workloads}
    progress = {f"{w.name}:{w.progress}": w.name for w in workloads}
    for event in history:
        name = progress.get(event.op)
        if name is not None and event.status == "ok" and event.invoke_t >= since:
            counts[name][event.proc.split("/")[0]] += 1
    return {n: min((c.get(f"p{i}", 0) for i in range(PROCS)), default=0) for n, c in counts.items()}


def _load(path: Path) -> list[Event]:
    return History.load(path).events if path.exists() else []


def _peek(path: Path) -> list[Event]:
    """The events recorded so far, while workers still append: a line being written may be
    seen half-written, so only complete lines count."""
    if not path.exists():
        return []
    *complete, _ = path.read_bytes().split(b"\n")
    return [Event(*orjson.loads(line)) for line in complete if line.strip()]


def _wait_progress(
    path: Path, workloads: list[Workload], since: float, need: int, what: str, futures: list[Any]
) -> None:
    deadline = time.monotonic() + BOUND
    while True:
        counts = _progress(_peek(path), workloads, since)
        if all(n >= need for n in counts.values()):
            return
        for future in futures:
            if future.done():
                raise AssertionError(f"a worker ended early: {future.result()}")
        if time.monotonic() > deadline:
            slow = {n: c for n, c in counts.items() if c < need}
            raise AssertionError(f"no progress {what}: {slow}")
        time.sleep(0.05)


def _marker_key() -> str:
    return slot_name("replicated", lambda n: [n])


def replicated_before(scenario: Scenario, topo: Any) -> float:
    """A time before which everything the primary about to fail acknowledged is on all of its
    replicas: a marker written there and confirmed by ``WAIT`` (replication is one ordered
    stream, so the replicas have every write the primary applied before the marker).

    A replica lags behind its primary (on a loaded 2-core machine, by hundreds of ms at times),
    so no fixed margin before a fault bounds what the fault can lose; this does. 0.0 (anything
    may be lost) if the replicas did not confirm within 5 s.
    """
    if scenario.topology == "cluster":
        primary, key = topo.master_of(SLOTS[0]), _marker_key()
        replicas = len(topo.replicas_of(primary))
    else:
        primary, key = topo.current_primary(), "replicated"
        replicas = len(topo.replicas)
    at = monotonic()
    with primary.client(socket_timeout=10.0) as client:
        client.set(key, "x")
        confirmed = int(client.execute_command("WAIT", replicas, 5000))
    return at if confirmed >= replicas else 0.0


def inject(scenario: Scenario, topo: Any) -> tuple[float, Promotion | None]:
    """The fault; returns when it was injected and the promotion it caused."""
    if scenario.topology == "cluster":
        master = topo.master_of(SLOTS[0])
        if scenario.fault == "failover":
            promotion = topo.failover(master)
        elif scenario.fault == "kill":
            promotion = topo.kill_master(master)
        else:
            target = next(m for m in topo.masters() if m is not master)
            at = time.monotonic()
            topo.move_slots(SLOTS[0], SLOTS[-1], target, batch=1, pause=0.005)
            return at, None
        return promotion.at, promotion
    promotion = topo.kill_primary() if scenario.fault == "kill" else topo.failover_promotion()
    return promotion.at, promotion


def run_scenario(
    scenario: Scenario,
    workloads: list[Workload],
    module: str,
    pool: Executor,
    aux: EmbeddedServer,
    binary: str | None,
    options: dict[str, Any],
    *,
    soak: bool = False,
) -> Run:
    """Run ``workloads`` through ``scenario``'s fault; see the module docstring.

    Under ``soak`` each phase runs 10x (warm-up) and 20x (after the fault) longer, and after a
    graceful Sentinel failover the workloads run on until the old primary has been demoted
    (`SentinelTopology.wait_following`, ~10 s): the whole window in which ordinary clients'
    writes are lost, and the READONLY replies that end it.
    """
    warm, after = (WARM_UP * 10, AFTER * 20) if soak else (WARM_UP, AFTER)
    started = time.monotonic()
    names = {w.name: w.names(scenario) for w in workloads}
    timings = {"names": time.monotonic() - started}
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp, topology(scenario, binary) as topo:
        timings["topology"] = time.monotonic() - started
        path, stop = Path(tmp) / "history.jsonl", Path(tmp) / "stop"
        target = target_of(scenario, topo)
        setup = authoritative(scenario, topo)
        aux_client = aux.client(socket_timeout=5.0)
        for workload in workloads:
            workload.setup(setup, aux_client, names[workload.name])
        setup.close()
        deadline = time.monotonic() + 4 * BOUND
        configs = [
            WorkerConfig(
                module,
                tuple(w.name for w in workloads),
                target,
                ("127.0.0.1", aux.port or 0),
                proc,
                str(path),
                str(stop),
                names,
                options,
                deadline,
            )
            for proc in range(PROCS)
        ]
        futures = [pool.submit(run_worker, config) for config in configs]
        try:
            _wait_progress(path, workloads, 0.0, warm, "before the fault", futures)
            timings["warm-up"] = time.monotonic() - started
            synced_at = replicated_before(scenario, topo) if scenario.fault != "move" else 0.0
            fault_at, promotion = inject(scenario, topo)
            if soak and scenario.graceful_sentinel:
                topo.wait_following()
            settled_at = monotonic()
            timings["fault"] = time.monotonic() - started
            _wait_progress(path, workloads, settled_at, after, "after the fault", futures)
        finally:
            stop.touch()
            crashes = [crash for future in futures for crash in future.result(timeout=BOUND)]
            dump = os.environ.get("REDIS_PATTERNS_FAILOVER_DUMP")  # for a look at a failure
            if dump and path.exists():
                shutil.copy(path, Path(dump) / f"{scenario.id}.jsonl")
        stopped_at = monotonic()
        timings["stopped"] = time.monotonic() - started
        assert not crashes, "\n".join(crashes)
        run = Run(
            scenario,
            _load(path),
            fault_at,
            settled_at,
            promotion,
            names,
            stopped_at=stopped_at,
            synced_at=synced_at,
        )
        if scenario.topology == "sentinel" and promotion is not None:
            run.second_failover = topo.current_primary() is not promotion.new
        final = authoritative(scenario, topo)
        try:
            for workload in workloads:
                events = run.events(workload.name)
                run.finals[workload.name] = workload.final(
                    final, aux_client, names[workload.name], events
                )
        finally:
            final.close()
            aux_client.close()
        timings["final"] = time.monotonic() - started
        run.timings = {k: round(v, 2) for k, v in timings.items()}
        return run


# --- shared judgements ----------------------------------------------------------------------


def lost_bound(run: Run, events: Iterable[Event]) -> tuple[float, float]:
    """When acknowledged writes may be lost in this scenario: ``(from, until)``.

    Exact (nothing may be lost) for a graceful cluster failover and a slot move: the window is
    empty. Otherwise it opens when the replicas last had everything (`replicated_before`, just
    before the fault). A SIGKILL loses at most what the dead primary acknowledged but had not
    yet sent to its replicas: the window closes at the kill (plus replies already on their
    way). A graceful Sentinel failover with ordinary clients loses what the old primary
    acknowledged until it is demoted (after the run); with sentinel_client, until the Sentinels
    named the new primary, plus its recheck.
    """
    s = run.scenario
    if s.topology == "cluster" and s.fault in ("failover", "move"):
        return (0.0, 0.0)
    if s.fault == "kill":
        return (run.synced_at, run.fault_at + IN_FLIGHT)
    if s.mitigated and run.promotion is not None:
        # sentinel_client moves once a Sentinel names the new primary, within its recheck:
        # nothing the old primary acknowledged after that is lost.
        return (run.synced_at, run.fault_at + run.promotion.promoted_after + FOLLOW_MARGIN)
    return (run.synced_at, run.stopped_at)


IN_FLIGHT = 0.05  # s after a SIGKILL in which a reply the dead server sent may still be read
FOLLOW_MARGIN = 1.5  # s: sentinel_client's recheck (0.5 s) and a thread's scheduling under load


def check_lost(run: Run, lost: Iterable[Event], what: str) -> None:
    """Every lost acknowledged write lies in the scenario's loss window (`lost_bound`)."""
    low, high = lost_bound(run, ())
    outside = [e for e in lost if not (low <= e.complete_t and e.invoke_t <= high)]
    assert not outside, (
        f"{len(outside)} {what} lost outside the window the scenario allows "
        f"({low - run.fault_at:+.3f} s .. {high - run.fault_at:+.3f} s of the fault), first: "
        f"{outside[0]}"
    )


def check_lost_count(run: Run, acknowledged: Iterable[Event], lost: int, what: str) -> None:
    """``lost`` of ``acknowledged`` (not told apart) is at most how many lie in the window."""
    low, high = lost_bound(run, ())
    window = sum(1 for e in acknowledged if low <= e.complete_t and e.invoke_t <= high)
    assert lost <= window, f"{lost} {what} lost, only {window} acknowledged in the loss window"


TYPED = {"BackendUnavailableError", "BackendTimeoutError", "NotReplicatedError"}


def check_errors(run: Run, workload: str, allowed: Iterable[str] = ()) -> dict[str, int]:
    """Every error a workload met is a typed backend error (or one it expects)."""
    errors = run.errors(workload)
    unexpected = set(errors) - TYPED - set(allowed)
    assert not unexpected, f"unexpected errors {unexpected}: " + str(
        [e.value for e in run.events(workload) if e.status == "info"][:3]
    )
    return errors
