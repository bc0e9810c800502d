"""A lock around a read-modify-write, with its fencing token checked by the resource."""

from __future__ import annotations

from redis_patterns import FencedStore, Lock, StaleFenceError, connect


def main() -> None:
    client = connect()  # REDIS_URL, or an embedded server started on demand
    store = FencedStore(client, "examples:inventory")

    lock = Lock(client, "examples:inventory", ttl=10, timeout=5)
    with lock:  # raises LockTimeoutError if not acquired within 5 s
        stock = int(client.get("examples:stock") or 100)
        client.set("examples:stock", stock - 1)
        assert lock.fence is not None
        store.write(lock.fence, "last_writer", "worker-1")  # accepted: newest fence so far
        print(f"held with fence {lock.fence}; stock now {stock - 1}")

    # A holder that paused past its lease comes back with an older fence: refused.
    late = Lock(client, "examples:inventory", ttl=10)
    late.acquire()
    old_fence = late.fence
    late.release()
    with Lock(client, "examples:inventory", ttl=10) as newer:
        assert newer.fence is not None
        assert old_fence is not None
        store.write(newer.fence, "last_writer", "worker-3")
    try:
        store.write(old_fence, "last_writer", "worker-2 (stale)")
    except StaleFenceError as exc:
        print(f"stale write refused: {exc}")
    print("resource holds:", store.read("last_writer"))
    store.clear()
    client.delete("examples:stock")


if __name__ == "__main__":
    main()
