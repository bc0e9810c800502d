"""BoundedCounter's logic: the seed's atomic check-and-increment, as plans."""

from __future__ import annotations

from .._keys import check_name
from .._plan import Command, Plan
from .._script import package_script
from .._validate import check_int

__all__ = ["BoundedCounterCore"]


class BoundedCounterCore:
    """State and plans shared by `BoundedCounter` and `AsyncBoundedCounter`."""

    __slots__ = ("key", "limit")

    def __init__(self, key: str | bytes, limit: int) -> None:
        self.key = check_name(key, "key", raw_key=True)
        self.limit = check_int(limit, "limit", minimum=0)

    def incr(self, amount: int) -> Plan[int | None]:
        check_int(amount, "amount", minimum=1)
        reply = yield package_script("bounded_counter_incr").eval((self.key,), (self.limit, amount))
        return None if reply is None else int(reply)

    def value(self) -> Plan[int]:
        reply = yield Command(("GET", self.key))
        return 0 if reply is None else int(reply)

    def reset(self) -> Plan[None]:
        yield Command(("DEL", self.key))
