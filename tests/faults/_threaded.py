"""A call run in a thread of its own, so a fault test can act while it waits (reset its link,
stall the server) and fail, rather than hang, when it never returns."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

BOUND = 30.0  # generous: a call that has not returned by then is a hang


class Threaded:
    """``fn()`` started in a daemon thread; `outcome` waits for its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result.append(fn())
        except BaseException as exc:
            self._result.append(exc)

    def outcome(self) -> Any:
        """The call's result or exception; a failed test if it is still running after `BOUND`."""
        self._thread.join(BOUND)
        assert not self._thread.is_alive(), f"the call did not return within {BOUND}s: a hang"
        return self._result[0]


def call_bounded(fn: Callable[[], Any]) -> BaseException | object:
    """Run ``fn`` in a thread; its exception or result, or fail if it never returns."""
    outcome: BaseException | object = Threaded(fn).outcome()
    return outcome
