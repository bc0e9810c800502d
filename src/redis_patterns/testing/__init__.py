"""Test support shipped with the package: fixtures, a command counter and fault tools."""

from .counter import CommandCounter, MonitoredCommand
from .proxy import FaultProxy, ProxyStats
from .sentinel import SentinelServer, SentinelTopology

__all__ = [
    "CommandCounter",
    "FaultProxy",
    "MonitoredCommand",
    "ProxyStats",
    "SentinelServer",
    "SentinelTopology",
]
