"""Metrics for Prometheus and OpenTelemetry: switched on here, free while off.

``use_prometheus()`` registers the library's counters, histograms and gauges (names starting
``redis_patterns_``) in a ``prometheus_client`` registry; ``use_opentelemetry()`` creates them on
an OpenTelemetry meter. Either, both or neither may be on. Labels are configured names (a
limiter's, a cache's namespace, a queue's), never a limited key or a cache key. See
docs/operating.md for the list.
"""

from __future__ import annotations

import weakref
from typing import Any

from . import _metrics
from ._errors import ConfigurationError
from ._version import __version__

__all__ = ["active", "describe", "disable", "use_opentelemetry", "use_prometheus"]

active = _metrics.active
describe = _metrics.describe


def use_prometheus(registry: Any = None) -> None:
    """Export the library's metrics through ``prometheus_client`` (extra ``[prometheus]``).

    Args:
        registry: the ``CollectorRegistry`` to register in; default ``prometheus_client``'s
            global ``REGISTRY`` (what ``start_http_server`` and ``make_asgi_app`` serve).
            Calling again with another registry moves the metrics there; with the same one,
            it does nothing. Counts are this process's since metrics were switched on.

    Raises:
        ConfigurationError: ``prometheus_client`` is not installed.
    """
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            "metrics for Prometheus need prometheus_client: pip install "
            "'redis-patterns[prometheus]'"
        ) from exc
    target = prometheus_client.REGISTRY if registry is None else registry
    _metrics.add_sink(
        lambda: _metrics.PrometheusSink(target, prometheus_client),
        _metrics.PrometheusSink,
        target,
    )


def use_opentelemetry(meter_provider: Any = None) -> None:
    """Export the library's metrics through the OpenTelemetry metrics API (extra
    ``[opentelemetry]``), on the meter ``redis_patterns``.

    Args:
        meter_provider: the ``MeterProvider`` to use; default the global one
            (``opentelemetry.metrics.set_meter_provider``). Calling again with another
            provider moves the metrics there (the earlier instruments report nothing from
            then on); with the same one, it does nothing.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed.
    """
    try:
        from opentelemetry import metrics as otel
    except ImportError as exc:
        raise ConfigurationError(
            "metrics for OpenTelemetry need opentelemetry-api: pip install "
            "'redis-patterns[opentelemetry]'"
        ) from exc
    target = otel.get_meter_provider() if meter_provider is None else meter_provider

    def make() -> _metrics.OpenTelemetrySink:
        # A provider hands out one meter per name, which keeps the instruments made first:
        # switched on again there, the sink made then is reopened rather than made again.
        sink = _made.get(target)
        if sink is None:
            meter = otel.get_meter("redis_patterns", __version__, meter_provider=target)
            sink = _made[target] = _metrics.OpenTelemetrySink(meter, otel, target)
        sink.closed = False
        return sink

    _metrics.add_sink(make, _metrics.OpenTelemetrySink, target)


_made: weakref.WeakKeyDictionary[Any, _metrics.OpenTelemetrySink] = weakref.WeakKeyDictionary()


def disable() -> None:
    """Switch every exporter off (e.g. between tests): recording costs nothing again, the
    Prometheus collectors are unregistered, the OpenTelemetry instruments report nothing, and
    counting starts from zero when metrics are next switched on."""
    _metrics.remove_sinks()
