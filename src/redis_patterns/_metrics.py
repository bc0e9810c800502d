"""The metrics recorder: every instrument's definition, the exporters switched on, and ``on``.

Each recording point in the library reads ``if _metrics.on:`` first, so with no exporter on a
recording costs one attribute read and allocates nothing. When on, ``Metric.record(labels,
value)`` looks up the function bound for that label tuple (once per series, then kept) and
calls it. A counter's or gauge's series is a cell summed here, whatever the exporters: a
Prometheus collector and OpenTelemetry's observable instruments read the cells when they
collect, so a hit costs one locked addition with either or both on (the OpenTelemetry SDK's
synchronous ``Counter.add`` costs some 10 µs a call, a tenth of a round trip to Redis, and
``prometheus_client``'s ``inc`` 0.4 µs per exporter). Histograms go to each exporter's own
instrument; none is recorded on a hot path (loads, lock waits and holds, pub/sub gaps).

The public switches are in `redis_patterns.metrics`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

__all__ = ["METRICS", "Metric", "add_sink", "lock_label", "on", "remove_sinks"]

on = False
"""Whether any exporter is on; read by every recording point before anything else."""

MAX_SERIES = 500
"""Label sets kept per metric; further ones are recorded under ``other`` (a runaway label, say
a lock name holding a user id, must not grow the exporter's memory without bound)."""

OTHER = "other"

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram bucket bounds in seconds, for both exporters (OpenTelemetry's default ones are
meant for milliseconds)."""


class _Sink(Protocol):
    """An exporter: it reads the counters' and gauges' cells itself, and gives each
    histogram series a function that observes a value."""

    def bind(self, metric: Metric, labels: tuple[str, ...]) -> Callable[[float], None]: ...

    def close(self) -> None: ...


_sinks: list[_Sink] = []
_lock = threading.Lock()


class Metric:
    """One instrument: a counter (``record`` adds), a histogram (observes) or a gauge (sets).

    ``name`` is the base name: Prometheus shows a counter as ``<name>_total``; OpenTelemetry
    uses ``name`` itself (its Prometheus exporter adds the suffix). A counter's or gauge's
    series is one `_Cell`, which every exporter reads when it collects; a histogram's is the
    exporters' own instruments.
    """

    __slots__ = ("_bound", "_cells", "doc", "kind", "labels", "name", "unit")

    def __init__(self, name: str, kind: str, labels: tuple[str, ...], doc: str) -> None:
        self.name = "redis_patterns_" + name
        self.kind = kind
        self.labels = labels
        self.doc = doc
        self.unit = "s" if name.endswith("_seconds") else ""
        self._bound: dict[tuple[str, ...], Callable[[float], None]] = {}
        self._cells: dict[tuple[str, ...], _Cell] = {}

    def record(self, labels: tuple[str, ...], value: float = 1.0) -> None:
        """Add ``value`` to (counter), observe it in (histogram) or set (gauge) one series."""
        fn = self._bound.get(labels)
        if fn is None:
            fn = self._bind(labels)
        fn(value)

    def _bind(self, labels: tuple[str, ...]) -> Callable[[float], None]:
        with _lock:
            fn = self._bound.get(labels)
            if fn is not None:
                return fn
            if len(self._bound) >= MAX_SERIES:
                labels = (OTHER,) * len(self.labels)
                fn = self._bound.get(labels)
                if fn is not None:
                    return fn
            if self.kind == "histogram":
                fn = _fan_out(tuple(sink.bind(self, labels) for sink in _sinks))
            else:
                cell = self._cells[labels] = _Cell(dict(zip(self.labels, labels, strict=True)))
                fn = cell.add if self.kind == "counter" else cell.set
            self._bound[labels] = fn
            return fn

    def series(self) -> list[tuple[tuple[str, ...], _Cell]]:
        """A counter's or gauge's series so far (a copy: recording may add one meanwhile)."""
        return list(self._cells.items())

    def _forget(self, *, values: bool) -> None:
        """Drop the histograms' bound instruments (the exporters changed) and, with
        ``values``, every series (switched off: counting starts again from zero)."""
        if values:
            self._bound, self._cells = {}, {}
        elif self.kind == "histogram":
            self._bound = {}


class _Cell:
    """One counter's or gauge's series: its value, read by every exporter when it collects."""

    __slots__ = ("attributes", "lock", "value")

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.value = 0.0
        self.lock = threading.Lock()

    def add(self, amount: float) -> None:
        with self.lock:  # += is a read and a write: threads would lose counts without it
            self.value += amount

    def set(self, value: float) -> None:
        self.value = value


def _fan_out(fns: tuple[Callable[[float], None], ...]) -> Callable[[float], None]:
    if len(fns) == 1:
        return fns[0]

    def each(value: float) -> None:
        for fn in fns:
            fn(value)

    return each


def _m(name: str, kind: str, labels: tuple[str, ...], doc: str) -> Metric:
    return Metric(name, kind, labels, doc)


# fmt: off
LIMITER_DECISIONS = _m("limiter_decisions", "counter", ("limiter", "decision"),
                       "Rate limiter hits by decision (allowed or refused); peeks are not counted")
CACHE_HITS = _m("cache_hits", "counter", ("cache",),
                "Cache reads that found a fresh (or servable stale) value in Redis")
CACHE_NEAR_HITS = _m("cache_near_hits", "counter", ("cache",),
                     "Cache reads answered by this process's near cache (no round trip)")
CACHE_MISSES = _m("cache_misses", "counter", ("cache",),
                  "Cache reads that found no usable value (get_or_load: then loaded)")
CACHE_STALE = _m("cache_stale", "counter", ("cache",),
                 "Stale values served while one caller refreshes them")
CACHE_LOADS = _m("cache_loads", "counter", ("cache",),
                 "Loader calls' keys (foreground and background refreshes)")
CACHE_LOAD_ERRORS = _m("cache_load_errors", "counter", ("cache",),
                       "Keys whose loader raised")
CACHE_LOAD_SECONDS = _m("cache_load_seconds", "histogram", ("cache",),
                        "Time a loader call took (one observation per call)")
LOCK_ACQUISITIONS = _m("lock_acquisitions", "counter", ("lock", "result"),
                       "Lock acquire calls by result (acquired, or failed: busy or timed out)")
LOCK_WAIT_SECONDS = _m("lock_acquire_wait_seconds", "histogram", ("lock",),
                       "Time from an acquire's first attempt to its successful one")
LOCK_HOLD_SECONDS = _m("lock_hold_seconds", "histogram", ("lock",),
                       "Time from acquiring a lock to releasing it")
LOCK_RENEWALS = _m("lock_renewals", "counter", ("lock",),
                   "Lease extensions (watchdog renewals and extend calls) that succeeded")
LOCK_LOSSES = _m("lock_losses", "counter", ("lock",),
                 "Leases found gone by a renewal or an extend (expired or taken)")
SESSION_READS = _m("session_reads", "counter", ("store", "result"),
                   "Session reads by result (found or missing)")
SESSION_WRITES = _m("session_writes", "counter", ("store", "op"),
                    "Session writes by operation (create or update)")
SESSION_ROTATIONS = _m("session_rotations", "counter", ("store",),
                       "Session ids rotated (login, privilege change)")
STREAM_ADDS = _m("stream_adds", "counter", ("queue", "result"),
                 "Entries added to a queue (added, or duplicate: an idempotency key seen)")
STREAM_HANDLED = _m("stream_handled", "counter", ("queue", "group"),
                    "Entries a worker's handler handled and acknowledged")
STREAM_FAILED = _m("stream_failed", "counter", ("queue", "group"),
                   "Handler failures (each delivery that raised)")
STREAM_DEAD_LETTERED = _m("stream_dead_lettered", "counter", ("queue", "group"),
                          "Entries moved to the dead-letter stream")
STREAM_LAG = _m("stream_lag", "gauge", ("queue", "group"),
                "Entries the group has not read yet, as of the last info() of the queue")
STREAM_PENDING = _m("stream_pending", "gauge", ("queue", "group"),
                    "Entries delivered but not acknowledged, as of the last info() of the queue")
PUBSUB_GAPS = _m("pubsub_gaps", "counter", (),
                 "Subscriber links lost (periods in which messages may have been missed)")
PUBSUB_GAP_SECONDS = _m("pubsub_gap_seconds", "histogram", (),
                        "How long a subscriber's link was down, observed when it is back")
BACKEND_ERRORS = _m("backend_errors", "counter", ("error",),
                    "Server and connection errors by the library's error class")
# fmt: on

METRICS: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))


def lock_label(name: bytes) -> str:
    """A lock's label: its name up to the first ``:`` (``order:42`` -> ``order``), so a name
    per resource does not make a series per resource."""
    return name.split(b":", 1)[0].decode(errors="replace")


def add_sink(make: Callable[[], _Sink], replace: type, target: object) -> None:
    """Switch an exporter on, replacing any other of class ``replace``. Nothing changes when
    one of that class already exports to ``target`` (the same registry or meter provider:
    registering the instruments there again would clash). Counts go on: they are this
    process's since the first exporter was switched on."""
    global on
    with _lock:
        for sink in [s for s in _sinks if isinstance(s, replace)]:
            if getattr(sink, "target", None) is target:
                return
            sink.close()
            _sinks.remove(sink)
        _sinks.append(make())
        for metric in METRICS:
            metric._forget(values=False)
        on = True


def remove_sinks() -> None:
    """Switch every exporter off: recording points cost nothing again, and every count starts
    again from zero when one is next switched on."""
    global on
    with _lock:
        on = False
        for sink in _sinks:
            sink.close()
        _sinks.clear()
        for metric in METRICS:
            metric._forget(values=True)


def active() -> tuple[str, ...]:
    """The exporters on: ``"prometheus"``, ``"opentelemetry"``."""
    return tuple(getattr(s, "kind", "") for s in _sinks)


# --- Prometheus ---------------------------------------------------------------------------


class PrometheusSink:
    """A collector that reads the counters' and gauges' cells at each scrape, and one
    ``prometheus_client`` histogram per histogram, all registered in ``registry``."""

    kind = "prometheus"

    def __init__(self, registry: Any, client: Any) -> None:
        self.registry = self.target = registry
        self._core = client.metrics_core
        self._histograms: dict[str, Any] = {
            m.name: client.Histogram(
                m.name, m.doc, list(m.labels), registry=registry, buckets=BUCKETS
            )
            for m in METRICS
            if m.kind == "histogram"
        }
        registry.register(self)

    def describe(self) -> list[Any]:
        """The collector's families without samples: lets the registry refuse duplicates."""
        return list(self._families(with_samples=False))

    def collect(self) -> list[Any]:
        return list(self._families(with_samples=True))

    def _families(self, *, with_samples: bool) -> Iterator[Any]:
        for metric in METRICS:
            if metric.kind == "histogram":
                continue
            family_of = (
                self._core.CounterMetricFamily
                if metric.kind == "counter"
                else self._core.GaugeMetricFamily
            )
            family = family_of(metric.name, metric.doc, labels=metric.labels)
            if with_samples:
                for labels, cell in metric.series():
                    family.add_metric(labels, cell.value)
            yield family

    def bind(self, metric: Metric, labels: tuple[str, ...]) -> Callable[[float], None]:
        histogram = self._histograms[metric.name]
        observe: Callable[[float], None] = (
            histogram.labels(*labels) if labels else histogram
        ).observe
        return observe

    def close(self) -> None:
        self.registry.unregister(self)
        for histogram in self._histograms.values():
            self.registry.unregister(histogram)


# --- OpenTelemetry ------------------------------------------------------------------------


class OpenTelemetrySink:
    """Instruments of one OpenTelemetry meter: observable counters and gauges reading the
    cells at each collection, and synchronous histograms."""

    kind = "opentelemetry"

    def __init__(self, meter: Any, otel: Any, target: object) -> None:
        self.target = target
        self._otel = otel
        self._histograms: dict[str, Any] = {}
        self.closed = False
        for metric in METRICS:
            if metric.kind == "histogram":
                self._histograms[metric.name] = _histogram(meter, metric)
                continue
            create = (
                meter.create_observable_counter
                if metric.kind == "counter"
                else meter.create_observable_gauge
            )
            create(
                metric.name,
                callbacks=[functools.partial(self._observe, metric)],
                unit=metric.unit,
                description=metric.doc,
            )

    def _observe(self, metric: Metric, options: Any) -> Iterator[Any]:
        if self.closed:  # an instrument cannot be removed from its meter: it reports nothing
            return
        observation = self._otel.Observation
        for _, cell in metric.series():
            yield observation(cell.value, cell.attributes)

    def bind(self, metric: Metric, labels: tuple[str, ...]) -> Callable[[float], None]:
        attributes = dict(zip(metric.labels, labels, strict=True))
        record: Callable[[float], None] = functools.partial(
            self._histograms[metric.name].record, attributes=attributes
        )
        return record

    def close(self) -> None:
        self.closed = True


def _histogram(meter: Any, metric: Metric) -> Any:
    try:
        return meter.create_histogram(
            metric.name,
            unit=metric.unit,
            description=metric.doc,
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
    except TypeError:  # an API before 1.23 takes no advisory: its default buckets then
        return meter.create_histogram(metric.name, unit=metric.unit, description=metric.doc)


def describe() -> Iterable[tuple[str, str, tuple[str, ...], str]]:
    """``(name, kind, labels, description)`` of every metric, for the docs and tests."""
    return ((m.name, m.kind, m.labels, m.doc) for m in METRICS)
