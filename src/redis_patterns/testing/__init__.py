"""Test support shipped with the package: fixtures, a command counter and fault tools."""

from .counter import CommandCounter, MonitoredCommand

__all__ = ["CommandCounter", "MonitoredCommand"]
