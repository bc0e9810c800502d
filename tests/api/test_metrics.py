"""Metrics after scripted workloads on real servers: exact counts in the Prometheus exposition
and in OpenTelemetry's in-memory reader, labels that never hold a user's key, the missing
extra's error, and the bound on series per metric."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from redis_patterns import (
    AsyncCache,
    AsyncFixedWindow,
    BackendUnavailableError,
    Cache,
    ConfigurationError,
    FixedWindow,
    Lock,
    LockNotOwnedError,
    MultiLimit,
    SessionStore,
    StreamQueue,
    Worker,
    _metrics,
    connect,
    metrics,
)
from redis_patterns._core.pubsub import SubscriberCore

DAY = 86400.0
SECRET = "user-secret-4242"  # the limited / cached key: must never appear in a label
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operating.md"


@dataclass
class Exporters:
    registry: CollectorRegistry
    reader: InMemoryMetricReader
    provider: MeterProvider

    def prom(self, name: str, **labels: str) -> float:
        """A sample of the Prometheus exposition (0 when the series does not exist)."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def _points(self) -> Iterator[tuple[str, Any]]:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        yield metric.name, point

    def otel(self, name: str, **attributes: str) -> float:
        """An OpenTelemetry metric's value for ``attributes`` (a histogram's count)."""
        total = 0.0
        for metric, point in self._points():
            if metric == name and dict(point.attributes or {}) == attributes:
                total += point.count if isinstance(point, HistogramDataPoint) else point.value
        return total

    def both(self, name: str, **labels: str) -> tuple[float, float]:
        """``(Prometheus, OpenTelemetry)`` for a counter ``name`` (its ``_total`` sample)."""
        return self.prom(name + "_total", **labels), self.otel(name, **labels)

    def all_labels(self) -> set[str]:
        """Every label value in either exporter."""
        values = {
            value
            for family in self.registry.collect()
            for sample in family.samples
            for value in sample.labels.values()
        }
        for _, point in self._points():
            values.update(str(v) for v in (point.attributes or {}).values())
        return values


@pytest.fixture
def exporters() -> Iterator[Exporters]:
    registry = CollectorRegistry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.use_prometheus(registry)
    metrics.use_opentelemetry(provider)
    try:
        yield Exporters(registry, reader, provider)
    finally:
        metrics.disable()
        provider.shutdown()


def test_limiter_decisions_exact(client: Any, prefix: str, exporters: Exporters) -> None:
    name = f"{prefix}-api"
    limiter = FixedWindow(client, 100, DAY, name=name)
    decisions = [limiter.hit(SECRET) for _ in range(120)]
    limiter.peek(SECRET)  # a peek decides nothing: not counted
    assert sum(d.allowed for d in decisions) == 100
    decision = "redis_patterns_limiter_decisions"
    assert exporters.both(decision, limiter=name, decision="allowed") == (100, 100)
    assert exporters.both(decision, limiter=name, decision="refused") == (20, 20)
    assert SECRET not in generate_latest(exporters.registry).decode()
    assert SECRET not in exporters.all_labels()


def test_unnamed_and_multi_limits_are_labelled_by_their_parameters(
    client: Any, prefix: str, exporters: Exporters
) -> None:
    fixed = FixedWindow(client, 3, DAY)
    both = MultiLimit([FixedWindow(client, 2, 60), FixedWindow(client, 5, DAY)])
    for _ in range(4):
        fixed.hit(f"{prefix}:{SECRET}")
        both.hit(f"{prefix}:{SECRET}")
    decision = "redis_patterns_limiter_decisions"
    fixed_name = fixed._cores[0].suffix
    assert exporters.both(decision, limiter=fixed_name, decision="allowed") == (3, 3)
    multi = "+".join(c.suffix for c in both._cores)
    assert exporters.both(decision, limiter=multi, decision="allowed") == (2, 2)
    assert exporters.both(decision, limiter=multi, decision="refused") == (2, 2)
    assert not any(SECRET in v or prefix in v for v in exporters.all_labels())


def test_counts_stay_exact_across_threads(backend: Any, prefix: str, exporters: Exporters) -> None:
    name = f"{prefix}-threads"
    limiter = FixedWindow(backend.client(max_connections=8), 600, DAY, name=name)

    def work() -> None:
        for _ in range(250):
            limiter.hit(SECRET)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    decision = "redis_patterns_limiter_decisions"
    assert exporters.both(decision, limiter=name, decision="allowed") == (600, 600)
    assert exporters.both(decision, limiter=name, decision="refused") == (400, 400)


async def test_async_limiter_shares_the_recording_point(
    async_client: Any, prefix: str, exporters: Exporters
) -> None:
    name = f"{prefix}-a"
    limiter = AsyncFixedWindow(async_client, 10, DAY, name=name)
    for _ in range(13):
        await limiter.hit(SECRET)
    decision = "redis_patterns_limiter_decisions"
    assert exporters.both(decision, limiter=name, decision="allowed") == (10, 10)
    assert exporters.both(decision, limiter=name, decision="refused") == (3, 3)


def test_cache_hits_misses_loads_exact(client: Any, prefix: str, exporters: Exporters) -> None:
    cache = Cache(client, namespace=prefix, ttl=60)
    calls = []

    def load() -> str:
        calls.append(1)
        return "value"

    assert cache.get_or_load(SECRET, load) == "value"  # a miss, then a load
    for _ in range(4):
        assert cache.get_or_load(SECRET, load) == "value"  # hits
    assert cache.get(SECRET) == "value"  # a hit
    assert cache.get(f"{SECRET}-absent") is None  # a plain read's miss
    assert cache.get_many([SECRET, f"{SECRET}-x", f"{SECRET}-y"]) == ["value", None, None]
    assert len(calls) == 1
    labels = {"cache": prefix}
    assert exporters.both("redis_patterns_cache_hits", **labels) == (6, 6)
    assert exporters.both("redis_patterns_cache_misses", **labels) == (4, 4)
    assert exporters.both("redis_patterns_cache_loads", **labels) == (1, 1)
    assert exporters.prom("redis_patterns_cache_load_seconds_count", **labels) == 1
    assert exporters.otel("redis_patterns_cache_load_seconds", **labels) == 1
    assert exporters.both("redis_patterns_cache_near_hits", **labels) == (0, 0)
    assert not any(SECRET in v for v in exporters.all_labels())
    # `stats` keeps its meaning: its misses are the reads that loaded
    assert (cache.stats["hits"], cache.stats["misses"]) == (6, 1)


def test_cache_load_errors_counted(client: Any, prefix: str, exporters: Exporters) -> None:
    cache = Cache(client, namespace=prefix, ttl=60, error_backoff=0)

    def fail() -> str:
        raise RuntimeError("database down")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            cache.get_or_load(SECRET, fail)
    assert exporters.both("redis_patterns_cache_load_errors", cache=prefix) == (3, 3)
    assert exporters.both("redis_patterns_cache_loads", cache=prefix) == (3, 3)
    assert exporters.prom("redis_patterns_cache_load_seconds_count", cache=prefix) == 0


async def test_async_cache_near_hits(async_client: Any, prefix: str, exporters: Exporters) -> None:
    cache = AsyncCache(async_client, namespace=prefix, ttl=60, local=100)
    try:
        await cache.set(SECRET, 1)
        for _ in range(500):  # the near cache serves once its subscription is confirmed
            if cache.local_ready:
                break
            await cache.get(f"{SECRET}-warmup")
            await asyncio.sleep(0.01)
        assert cache.local_ready
        before = exporters.both("redis_patterns_cache_hits", cache=prefix)
        assert await cache.get(SECRET) == 1  # from Redis, then kept near
        for _ in range(5):
            assert await cache.get(SECRET) == 1  # near
        after = exporters.both("redis_patterns_cache_hits", cache=prefix)
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
        assert exporters.both("redis_patterns_cache_near_hits", cache=prefix) == (5, 5)
    finally:
        await cache.aclose()


def test_lock_acquisitions_holds_renewals_losses(
    client: Any, prefix: str, exporters: Exporters
) -> None:
    name = f"{prefix}:order:{SECRET}"  # the label is the part before the first ':'
    lock = Lock(client, name, ttl=10)
    rival = Lock(client, name, ttl=10)
    for _ in range(5):
        assert lock.acquire()
        assert not rival.acquire(blocking=False)
        lock.extend()
        lock.release()
    assert rival.acquire(timeout=0.05)  # free: acquired at its first attempt
    client.delete(rival._core.key)  # the lease disappears (as if it expired and was taken)
    with pytest.raises(LockNotOwnedError):
        rival.extend()
    label = {"lock": prefix}
    acquisitions = "redis_patterns_lock_acquisitions"
    assert exporters.both(acquisitions, result="acquired", **label) == (6, 6)
    assert exporters.both(acquisitions, result="failed", **label) == (5, 5)
    assert exporters.both("redis_patterns_lock_renewals", **label) == (5, 5)
    assert exporters.both("redis_patterns_lock_losses", **label) == (1, 1)
    assert exporters.prom("redis_patterns_lock_hold_seconds_count", **label) == 5
    assert exporters.otel("redis_patterns_lock_hold_seconds", **label) == 5
    assert exporters.prom("redis_patterns_lock_acquire_wait_seconds_count", **label) == 6
    assert exporters.otel("redis_patterns_lock_acquire_wait_seconds", **label) == 6
    assert not any(SECRET in v for v in exporters.all_labels())


def test_lock_wait_is_measured(client: Any, prefix: str, exporters: Exporters) -> None:
    holder = Lock(client, prefix, ttl=0.3)
    waiter = Lock(client, prefix, ttl=5)
    assert holder.acquire()
    assert waiter.acquire(timeout=5)  # waits for the holder's lease to expire
    waiter.release()
    waited = exporters.prom("redis_patterns_lock_acquire_wait_seconds_sum", lock=prefix)
    assert waited > 0  # the first attempt found the lock held: the successful one came later


def test_session_reads_writes_rotations(client: Any, prefix: str, exporters: Exporters) -> None:
    store = SessionStore(client, namespace=prefix)
    session = store.create({"cart": 1}, user_id=SECRET)
    for _ in range(3):
        assert store.get(session.id) is not None
    assert store.update(session.id, {"cart": 2})
    new_id = store.rotate(session.id)
    assert new_id is not None
    assert store.get(session.id) is None  # the old id is gone
    store.destroy(new_id)
    assert store.get(new_id) is None
    labels = {"store": prefix}
    assert exporters.both("redis_patterns_session_reads", result="found", **labels) == (3, 3)
    assert exporters.both("redis_patterns_session_reads", result="missing", **labels) == (2, 2)
    assert exporters.both("redis_patterns_session_writes", op="create", **labels) == (1, 1)
    assert exporters.both("redis_patterns_session_writes", op="update", **labels) == (1, 1)
    assert exporters.both("redis_patterns_session_rotations", **labels) == (1, 1)
    assert not any(SECRET in v or session.id in v for v in exporters.all_labels())


def test_stream_adds_handled_failed_dead_lettered(
    client: Any, prefix: str, exporters: Exporters
) -> None:
    queue = StreamQueue(client, prefix, "g")
    for i in range(10):
        queue.add({"n": i})
    queue.add({"n": 0}, idempotency_key="k")
    queue.add({"n": 0}, idempotency_key="k")  # a duplicate: nothing added

    def handler(message: Any) -> None:
        if message.data["n"] % 4 == 1:  # 1, 5, 9
            raise ValueError("bad entry")

    worker = Worker(queue, "w1", handler, batch=20, block=0.05, max_deliveries=1)
    assert worker.run_once() == 8
    info = queue.info()
    labels = {"queue": prefix, "group": "g"}
    assert exporters.both("redis_patterns_stream_adds", queue=prefix, result="added") == (11, 11)
    assert exporters.both("redis_patterns_stream_adds", queue=prefix, result="duplicate") == (1, 1)
    assert exporters.both("redis_patterns_stream_handled", **labels) == (8, 8)
    assert exporters.both("redis_patterns_stream_failed", **labels) == (3, 3)
    assert exporters.both("redis_patterns_stream_dead_lettered", **labels) == (3, 3)
    assert info.dead_letters == 3
    assert exporters.prom("redis_patterns_stream_pending", **labels) == info.pending == 0
    assert exporters.otel("redis_patterns_stream_pending", **labels) == 0
    assert exporters.prom("redis_patterns_stream_lag", **labels) == 0
    queue.add({"n": 100})
    queue.info()
    assert exporters.prom("redis_patterns_stream_lag", **labels) == 1
    assert exporters.otel("redis_patterns_stream_lag", **labels) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_backend_errors_by_class(exporters: Exporters) -> None:
    down = connect(f"redis://127.0.0.1:{_closed_port()}", socket_connect_timeout=0.5)
    limiter = FixedWindow(down, 5, DAY, name="down")
    for _ in range(3):
        with pytest.raises(BackendUnavailableError):
            limiter.hit(SECRET)
    down.close()
    errors = "redis_patterns_backend_errors"
    assert exporters.both(errors, error="BackendUnavailableError") == (3, 3)


def test_expected_error_replies_are_not_backend_errors(
    client: Any, prefix: str, exporters: Exporters
) -> None:
    queue = StreamQueue(client, prefix, "g")
    assert queue.pending().count == 0  # NOGROUP: no stream yet, so no group
    assert queue.ensure_group()
    assert not queue.ensure_group()  # BUSYGROUP: it exists
    counted = [
        sample
        for family in exporters.registry.collect()
        for sample in family.samples
        if sample.name == "redis_patterns_backend_errors_total"
    ]
    assert counted == []
    assert [p for name, p in exporters._points() if name == "redis_patterns_backend_errors"] == []


def test_pubsub_gaps_counted() -> None:
    registry = CollectorRegistry()
    metrics.use_prometheus(registry)
    try:
        core = SubscriberCore(["c"], [], sharded=False, health_check_interval=1, max_backoff=1)
        core.on_connected(10.0)
        core.on_lost(11.0, ConnectionError("reset"))
        core.on_lost(11.5, ConnectionError("refused"))  # still the same gap
        core.on_connected(13.0)
        assert registry.get_sample_value("redis_patterns_pubsub_gaps_total") == 1
        assert registry.get_sample_value("redis_patterns_pubsub_gap_seconds_sum") == 2.0
    finally:
        metrics.disable()


def test_off_by_default_and_after_disable(client: Any, prefix: str) -> None:
    assert not _metrics.on
    assert metrics.active() == ()
    FixedWindow(client, 5, DAY, name=prefix).hit("k")
    # nothing was bound: with no exporter a recording point only read ``_metrics.on``
    assert all(not m._bound for m in _metrics.METRICS)
    registry = CollectorRegistry()
    metrics.use_prometheus(registry)
    assert metrics.active() == ("prometheus",)
    metrics.disable()
    assert not _metrics.on
    assert list(registry.collect()) == []  # the collectors were unregistered


def test_moving_to_another_registry(client: Any, prefix: str) -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    try:
        metrics.use_prometheus(first)
        metrics.use_prometheus(second)  # replaces the first: nothing is registered twice
        FixedWindow(client, 5, DAY, name=prefix).hit("k")
        labels = {"limiter": prefix, "decision": "allowed"}
        assert second.get_sample_value("redis_patterns_limiter_decisions_total", labels) == 1
        assert list(first.collect()) == []
        assert metrics.active() == ("prometheus",)
    finally:
        metrics.disable()


def test_switching_on_twice_with_the_same_target_changes_nothing(
    client: Any, prefix: str, exporters: Exporters
) -> None:
    limiter = FixedWindow(client, 5, DAY, name=prefix)
    limiter.hit("k")
    metrics.use_prometheus(exporters.registry)
    metrics.use_opentelemetry(exporters.provider)
    limiter.hit("k")
    labels = {"limiter": prefix, "decision": "allowed"}
    assert exporters.both("redis_patterns_limiter_decisions", **labels) == (2, 2)
    # switched off and on again there: counting starts again, in both
    metrics.disable()
    metrics.use_prometheus(exporters.registry)
    metrics.use_opentelemetry(exporters.provider)
    limiter.hit("k")
    assert exporters.both("redis_patterns_limiter_decisions", **labels) == (1, 1)


def test_series_per_metric_are_bounded() -> None:
    registry = CollectorRegistry()
    metrics.use_prometheus(registry)
    try:
        for i in range(_metrics.MAX_SERIES + 50):
            _metrics.LOCK_RENEWALS.record((f"lock{i}",))
        samples = [
            s
            for family in registry.collect()
            for s in family.samples
            if s.name == "redis_patterns_lock_renewals_total"
        ]
        assert len(samples) == _metrics.MAX_SERIES + 1
        other = {"lock": _metrics.OTHER}
        assert registry.get_sample_value("redis_patterns_lock_renewals_total", other) == 50
    finally:
        metrics.disable()


@pytest.mark.parametrize(
    ("switch", "module", "extra"),
    [
        (metrics.use_prometheus, "prometheus_client", "redis-patterns[prometheus]"),
        (metrics.use_opentelemetry, "opentelemetry", "redis-patterns[opentelemetry]"),
    ],
)
def test_missing_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, switch: Callable[[], None], module: str, extra: str
) -> None:
    # None in sys.modules makes ``import <module>`` raise ImportError, as if not installed
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigurationError) as raised:
        switch()
    assert extra in str(raised.value)
    assert isinstance(raised.value.__cause__, ImportError)
    assert not _metrics.on


def test_every_metric_is_named_and_documented() -> None:
    described = list(metrics.describe())
    names = [name for name, _, _, _ in described]
    assert len(names) == len(set(names))
    assert all(name.startswith("redis_patterns_") for name in names)
    docs = DOCS.read_text(encoding="utf-8")
    shown = [name + "_total" if kind == "counter" else name for name, kind, _, _ in described]
    assert [name for name in shown if f"`{name}`" not in docs] == []


def test_grafana_dashboard_and_docs_query_only_real_series() -> None:
    kinds = {name: kind for name, kind, _, _ in metrics.describe()}
    series = set()
    for name, kind in kinds.items():
        if kind == "counter":
            series.add(name + "_total")
        elif kind == "histogram":
            series |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            series.add(name)
    dashboard = json.loads((DOCS.parent / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 7
    used = set(re.findall(r"redis_patterns_\w+", " ".join(exprs)))
    used |= set(re.findall(r"redis_patterns_\w+", DOCS.read_text(encoding="utf-8")))
    used -= {"redis_patterns_"}  # prose naming the prefix
    assert sorted(used - series - set(kinds)) == []
