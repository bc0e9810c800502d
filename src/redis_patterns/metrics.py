"""Metrics for Prometheus and OpenTelemetry: switched on here, free while off.

``use_prometheus()`` registers the library's counters, histograms and gauges (names starting
``redis_patterns_``) in a ``prometheus_client`` registry; ``use_opentelemetry()`` creates them on
an OpenTelemetry meter. Either, both or neither may be on. Labels are configured names (a
limiter's, a cache's namespace, a queue's), never a limited key or a cache key. See
docs/operating.md for the list.
"""

from __future__ import annotations

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
            Calling again moves the metrics to the new registry (their counts start over).

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
        replace=_metrics.PrometheusSink,
    )


def use_opentelemetry(meter_provider: Any = None) -> None:
    """Export the library's metrics through the OpenTelemetry metrics API (extra
    ``[opentelemetry]``), on the meter ``redis_patterns``.

    Args:
        meter_provider: the ``MeterProvider`` to use; default the global one
            (``opentelemetry.metrics.set_meter_provider``). Calling again replaces the meter
            (the earlier instruments report nothing from then on).

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
    meter = otel.get_meter("redis_patterns", __version__, meter_provider=meter_provider)
    _metrics.add_sink(
        lambda: _metrics.OpenTelemetrySink(meter, otel), replace=_metrics.OpenTelemetrySink
    )


def disable() -> None:
    """Switch every exporter off (e.g. between tests): recording costs nothing again, the
    Prometheus collectors are unregistered and the OpenTelemetry instruments report nothing."""
    _metrics.remove_sinks()
