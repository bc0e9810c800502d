"""A long job under a short lease: the watchdog renews it, and reports if it is ever lost."""

from __future__ import annotations

import time

from redis_patterns import Lock, LockNotOwnedError, connect


def main() -> None:
    client = connect()
    lost: list[str] = []
    lock = Lock(
        client,
        "examples:nightly-report",
        ttl=1.0,  # a crashed holder blocks others for at most ~1 s
        auto_renew=True,  # extended every ttl/3 while held
        max_hold=60,  # but never renewed for more than a minute
        on_lost=lambda lk: lost.append(f"lost lock {lk.name!r}"),
    )
    with lock:
        time.sleep(2.5)  # longer than the ttl: still ours thanks to the watchdog
        print("still owned after 2.5 s with a 1 s ttl:", lock.owned())

    # If someone breaks the lock, the next renewal notices: lost, on_lost, release raises.
    lock.acquire()
    client.delete(lock.key)
    deadline = time.monotonic() + 5
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    print("lost:", lock.lost, lost)
    try:
        lock.release()
    except LockNotOwnedError as exc:
        print("release refused:", exc)


if __name__ == "__main__":
    main()
