"""Pub/Sub logic: message encoding, publishing as a plan, and the subscriber's reconnect policy.

The subscriber's state machine is pure: it is told what happened (a push arrived, the link
broke, the link is back) and the time, and it answers what to do (resubscribe to what, wait how
long, ping now, declare the link dead). The facades in ``_async/pubsub.py`` / ``_sync/pubsub.py``
perform it over a dedicated link from ``_pubsub.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import _metrics
from .._errors import ConfigurationError
from .._keys import check_name
from .._plan import Command, Plan
from .._validate import check_bool, duration_ms
from .backoff import backoff_delay

__all__ = ["Gap", "Message", "PublisherCore", "SubscriberCore", "encode_message"]


@dataclass(frozen=True, slots=True)
class Message:
    """One published message as a subscriber received it.

    ``pattern`` is the pattern that matched (``None`` for a direct channel subscription);
    ``data`` is the payload as published, in bytes: `text` and `json` decode it.
    """

    channel: str
    pattern: str | None
    data: bytes

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.data.decode()

    def json(self) -> Any:
        """The payload decoded as JSON (what `Publisher.publish` sends for non-text values)."""
        return orjson.loads(self.data)


@dataclass(frozen=True, slots=True)
class Gap:
    """A period in which the subscriber was not connected, so messages may have been missed.

    ``started`` is when the break was detected and ``ended`` when every subscription was
    restored (``time.monotonic()`` seconds); ``error`` says what broke.
    """

    started: float
    ended: float
    error: str

    @property
    def duration(self) -> float:
        """Seconds without a subscription."""
        return self.ended - self.started


def encode_message(message: object) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON (orjson)."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode()
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    try:
        return orjson.dumps(message)
    except TypeError as exc:
        raise ConfigurationError(f"message is not bytes, str or JSON-serializable: {exc}") from exc


def _channel(value: object, what: str = "channel") -> bytes:
    # Braces are the user's to choose here (a hash tag picks a sharded channel's slot).
    return check_name(value, what, raw_key=True)


def _text(value: object) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


class PublisherCore:
    """Plans for `Publisher` and `AsyncPublisher`."""

    __slots__ = ("sharded",)

    def __init__(self, sharded: bool) -> None:
        self.sharded = check_bool(sharded, "sharded")

    def publish(self, channel: str | bytes, message: object) -> Plan[int]:
        name = _channel(channel)
        data = encode_message(message)
        reply = yield Command(("SPUBLISH" if self.sharded else "PUBLISH", name, data))
        return int(reply)


class SubscriberCore:
    """What a subscriber wants, what it has, and when to retry, ping or give a link up."""

    def __init__(
        self,
        channels: Iterable[str | bytes],
        patterns: Iterable[str | bytes],
        *,
        sharded: bool,
        health_check_interval: float,
        max_backoff: float,
    ) -> None:
        if isinstance(channels, str | bytes) or isinstance(patterns, str | bytes):
            raise ConfigurationError("channels and patterns must be collections of names")
        self.sharded = check_bool(sharded, "sharded")
        self.channels: set[bytes] = {_channel(c) for c in channels}
        self.patterns: set[bytes] = {_channel(p, "pattern") for p in patterns}
        if sharded and self.patterns:
            raise ConfigurationError("sharded pub/sub has no pattern subscriptions")
        self.health_ms = duration_ms(health_check_interval, "health_check_interval")
        self.max_backoff_ms = duration_ms(max_backoff, "max_backoff")
        self.connected = False
        self.gaps = 0
        self.gap_started: float | None = None
        self.gap_error = ""
        self.attempt = 0
        # When the next reconnection attempt may start: a deadline, not a sleep, so a reader
        # polling with short timeouts still reconnects once the backoff is over.
        self.retry_at = 0.0
        self.last_traffic = 0.0
        self.ping_sent: float | None = None

    # --- subscriptions ----------------------------------------------------------------------

    def check_channels(self, names: Iterable[str | bytes], what: str) -> set[bytes]:
        if isinstance(names, str | bytes):
            names = (names,)
        found = {_channel(n, what) for n in names}
        if not found:
            raise ConfigurationError(f"give at least one {what}")
        if what == "pattern" and self.sharded:
            raise ConfigurationError("sharded pub/sub has no pattern subscriptions")
        return found

    def add(self, names: Iterable[str | bytes], what: str) -> set[bytes]:
        """Want more channels (``what="channel"``) or patterns; returns the ones not had yet."""
        wanted = self.patterns if what == "pattern" else self.channels
        new = self.check_channels(names, what) - wanted
        wanted |= new
        return new

    def remove(self, names: Iterable[str | bytes], what: str) -> set[bytes]:
        """Stop wanting channels or patterns; returns those that were wanted."""
        wanted = self.patterns if what == "pattern" else self.channels
        gone = self.check_channels(names, what) & wanted
        wanted -= gone
        return gone

    def link_args(
        self, channels: Iterable[bytes] = (), patterns: Iterable[bytes] = ()
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """``(channels, patterns, shard channels)`` for the transport."""
        chans = sorted(channels)
        if self.sharded:
            return [], [], chans
        return chans, sorted(patterns), []

    def all_link_args(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        return self.link_args(self.channels, self.patterns)

    # --- connection state -------------------------------------------------------------------

    def on_connected(self, now: float) -> Gap | None:
        """The link is (re)open and every subscription was sent; closes the open gap if any."""
        self.connected = True
        self.attempt = 0
        self.last_traffic = now
        self.ping_sent = None
        if self.gap_started is None:
            return None
        gap = Gap(self.gap_started, now, self.gap_error)
        self.gap_started = None
        if _metrics.on:
            _metrics.PUBSUB_GAP_SECONDS.record((), gap.duration)
        return gap

    def on_lost(self, now: float, error: object) -> None:
        """The link broke (or never came up). Opens a gap unless one is already open."""
        if self.connected:
            self.gaps += 1
            if _metrics.on:
                _metrics.PUBSUB_GAPS.record(())
            self.gap_started = now
            self.gap_error = _text(error) or type(error).__name__
        self.connected = False
        self.attempt += 1
        self.retry_at = now + self.retry_delay()

    def retry_wait(self, now: float) -> float:
        """Seconds until the next reconnection attempt may start (0: now)."""
        return max(0.0, self.retry_at - now)

    def retry_delay(self) -> float:
        """Seconds to wait before the next attempt: 25 ms doubling up to ``max_backoff``."""
        if self.attempt <= 1:
            return 0.0  # the first retry is immediate: a restarted server is often back already
        return backoff_delay(self.attempt - 2, 25, self.max_backoff_ms, doublings=16) / 1000

    def read_slice(self) -> float:
        """How long one read may block: short, so pings, changes and close are noticed."""
        return min(self.health_ms / 2000, 0.25)

    # --- liveness (half-open links) ---------------------------------------------------------

    def on_traffic(self, now: float) -> None:
        self.last_traffic = now
        self.ping_sent = None

    def ping_due(self, now: float) -> bool:
        """Quiet for ``health_check_interval``: send a PING (its pong counts as traffic)."""
        return self.ping_sent is None and (now - self.last_traffic) * 1000 >= self.health_ms

    def on_ping(self, now: float) -> None:
        self.ping_sent = now

    def is_dead(self, now: float) -> bool:
        """No pong within ``health_check_interval`` of a PING: the link is half-open."""
        return self.ping_sent is not None and (now - self.ping_sent) * 1000 >= self.health_ms

    # --- pushes ---------------------------------------------------------------------------

    def ended_by_server(self, raw: dict[str, Any]) -> str | None:
        """Why the server ended a subscription we still hold, or None.

        A cluster node that no longer owns a shard channel's slot (after a failover or a slot
        migration) sends ``sunsubscribe`` on its own; the link stays up but carries nothing more
        for that channel, so it must be treated as lost: resubscribe where the slot lives now.
        """
        if _text(raw.get("type")) != "sunsubscribe":
            return None
        channel = raw.get("channel")
        name = channel if isinstance(channel, bytes) else _text(channel).encode()
        if name not in self.channels:
            return None  # our own unsubscribe, confirmed
        return f"the server ended the subscription to {_text(name)!r} (its slot moved)"

    def on_push(self, raw: dict[str, Any], now: float) -> Message | None:
        """A push from the server: a `Message` for data, None for confirmations and pongs."""
        self.on_traffic(now)
        kind = _text(raw.get("type"))
        if kind in ("message", "pmessage", "smessage"):
            pattern = raw.get("pattern") if kind == "pmessage" else None
            data = raw.get("data")
            payload = data if isinstance(data, bytes) else _text(data).encode()
            return Message(
                _text(raw.get("channel")), None if pattern is None else _text(pattern), payload
            )
        return None
