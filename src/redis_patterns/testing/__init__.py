"""Test support shipped with the package: fixtures, a command counter and fault tools."""

from .._topology import Promotion
from .counter import CommandCounter, MonitoredCommand
from .history import (
    DeliveryResult,
    Event,
    FencedResource,
    FencedWrite,
    FenceResult,
    History,
    Hold,
    LinearizabilityResult,
    LinOp,
    Model,
    OverlapResult,
    check_at_least_once,
    check_fenced,
    check_linearizable,
    check_no_overlap,
    holds_from_history,
    kv_model,
    register_model,
)
from .proxy import FaultProxy, ProxyStats
from .sentinel import SentinelServer, SentinelTopology

__all__ = [
    "CommandCounter",
    "DeliveryResult",
    "Event",
    "FaultProxy",
    "FenceResult",
    "FencedResource",
    "FencedWrite",
    "History",
    "Hold",
    "LinOp",
    "LinearizabilityResult",
    "Model",
    "MonitoredCommand",
    "OverlapResult",
    "Promotion",
    "ProxyStats",
    "SentinelServer",
    "SentinelTopology",
    "check_at_least_once",
    "check_fenced",
    "check_linearizable",
    "check_no_overlap",
    "holds_from_history",
    "kv_model",
    "register_model",
]
