"""Redlock over 5 independent servers: it keeps working with 2 of them down."""

from __future__ import annotations

from contextlib import ExitStack

from redis_patterns import EmbeddedServer, Redlock


def main() -> None:
    with ExitStack() as stack:
        # Five independent servers (in production: five machines, not five DBs of one server).
        servers = [stack.enter_context(EmbeddedServer()) for _ in range(5)]
        clients = [s.client(socket_timeout=1) for s in servers]
        lock = Redlock(clients, "examples:payout", ttl=10, node_timeout=0.2)
        lock.verify_servers()  # one INFO per server: refuses the same server reached twice

        with lock:
            print(f"acquired on a majority; validity left {lock.validity:.3f}s")

        servers[0].kill()
        servers[1].pause()  # hung, not just refusing: bounded by node_timeout
        try:
            print("with 2 of 5 down, acquire:", lock.acquire())
            lock.release()
        finally:
            servers[1].resume()


if __name__ == "__main__":
    main()
