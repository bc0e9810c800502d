"""Demo: the SETNX+EXPIRE deadlock, the atomic lease that recovers, and a fenced stale write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ..._sync.lock import FencedStore, Lock
from ..demo import DemoContext, section

# The "other process" of each scenario: it takes the lock, reports, then waits to be killed,
# paused or told to write. Run with: <url> <mode> <name>.
_CHILD = r"""
import sys, time
import redis
from redis_patterns import FencedStore, Lock, StaleFenceError
url, mode, name = sys.argv[1:4]
client = redis.Redis.from_url(url)
if mode == "naive":
    client.setnx(name, "process-A")        # step 1 of the seed's broken recipe...
    print("locked", flush=True)
    time.sleep(60)                           # ...and it dies before step 2 (EXPIRE)
    client.expire(name, 1)
elif mode == "atomic":
    lock = Lock(client, name, ttl=float(sys.argv[4]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(60)
elif mode == "fenced":
    lock = Lock(client, name, ttl=float(sys.argv[4]), auto_renew=True)
    lock.acquire()
    print("locked", lock.fence, flush=True)
    sys.stdin.readline()                     # resumed after a long pause: write, unaware
    try:
        FencedStore(client, name).write(lock.fence, "owner", "A (stale)")
        print("accepted", flush=True)
    except StaleFenceError:
        print("refused", flush=True)
"""


def _child(ctx: DemoContext, mode: str, name: str, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, ctx.url, mode, name, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()  # "locked": the child holds the lock now
    return process


def _reap(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
    process.wait(10)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


@section("locks", "Locks: SETNX+EXPIRE deadlock, atomic lease, fencing a paused holder", order=20)
def demo_locks(ctx: DemoContext) -> bool:
    client = ctx.client()
    ttl = 0.5
    ok = True

    # 1. The seed's naive lock: a crash between SETNX and EXPIRE leaves a key that never expires.
    naive_key = ctx.key("naive")
    child = _child(ctx, "naive", naive_key)
    child.kill()  # SIGKILL between the two commands
    _reap(child)
    waited_until = time.monotonic() + 4 * ttl
    while time.monotonic() < waited_until and client.set(naive_key, "B", nx=True) is None:
        time.sleep(0.05)
    naive_pttl = client.pttl(naive_key)
    stuck = client.get(naive_key) == b"process-A"
    ctx.say(
        f"SETNX then crash before EXPIRE: after {4 * ttl:.1f}s the key has PTTL {naive_pttl} "
        f"({'no expiry: every later SETNX fails, a deadlock' if stuck else 'freed?!'})"
    )
    ok &= stuck and naive_pttl == -1
    client.delete(naive_key)

    # 2. The atomic lease: SET NX PX in one command; the dead holder's lock frees itself.
    name = ctx.key("atomic")
    child = _child(ctx, "atomic", name, str(ttl))
    child.kill()
    killed_at = time.monotonic()
    _reap(child)
    rival = Lock(client, name, ttl=5)
    got = rival.acquire(timeout=10)
    recovered = time.monotonic() - killed_at
    ctx.say(
        f"Lock (SET NX PX, ttl {ttl}s), holder SIGKILLed: a rival got the lock "
        f"{recovered:.2f}s later (fence {rival.fence})"
    )
    ok &= got and recovered < ttl + 5
    if got:
        rival.release()

    # 3. A holder paused past its lease writes late; the fenced resource refuses it.
    name = ctx.key("fenced")
    store = FencedStore(client, name)
    child = _child(ctx, "fenced", name, "0.3")
    os.kill(child.pid, signal.SIGSTOP)  # a long GC pause
    try:
        paused_at = time.monotonic()
        rival = Lock(client, name, ttl=5)
        got = rival.acquire(timeout=10)
        if got and rival.fence is not None:
            store.write(rival.fence, "owner", "B")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - paused_at)))  # >= 3 x the lease
        paused_for = time.monotonic() - paused_at
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    verdict = child.stdout.readline().strip()
    _reap(child)
    final = store.read("owner")
    ctx.say(
        f"holder A paused {paused_for:.2f}s (its lease: 0.3s); B took the lock (fence "
        f"{rival.fence}) and wrote; A woke up and wrote with its old fence: {verdict}; "
        f"the resource holds {final!r}"
    )
    ok &= got and verdict == "refused" and final == b"B"
    if got:
        rival.release()
    store.clear()
    client.close()
    return bool(ok)
