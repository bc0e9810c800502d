"""Demo: a session's life: login, sliding and absolute expiry, rotation, log out everywhere."""

from __future__ import annotations

import time

from ..._sync.sessions import SessionStore
from ..demo import DemoContext, section

IDLE = 0.6
ABSOLUTE = 1.5


@section("sessions", "SessionStore: sliding and absolute expiry, rotation, log out everywhere", 40)
def demo_sessions(ctx: DemoContext) -> bool:
    client = ctx.client()
    store = SessionStore(client, namespace=ctx.key("s"), idle_ttl=IDLE, absolute_ttl=ABSOLUTE)
    ok = True

    def pttl(sid: str) -> int:
        return int(client.pttl(store._core._key_of(sid)))

    ctx.say(f"idle_ttl {IDLE}s, absolute_ttl {ABSOLUTE}s (short, for the demo)")
    anonymous = store.create({"cart_count": 0})
    store.incr(anonymous.id, "cart_count")
    sid = store.rotate(anonymous.id, user_id="alice")
    ok &= sid is not None and store.get(anonymous.id) is None
    assert sid is not None
    ctx.say(
        f"login: id rotated {anonymous.id[:6]}... -> {sid[:6]}...; the old id now reads as"
        f" {store.get(anonymous.id)}, the cart kept: {dict(store.get(sid) or {})}"
    )

    # activity slides the idle expiry, but never past the absolute one
    started = time.monotonic()
    samples: list[str] = []
    alive_for = 0.0
    while time.monotonic() - started < ABSOLUTE + 2:
        got = store.get(sid)
        if got is None:
            alive_for = time.monotonic() - started
            break
        samples.append(f"{pttl(sid)}")
        time.sleep(0.2)
    ctx.say(f"a read every 0.2s; PTTL (ms) right after each read: {', '.join(samples)}")
    ctx.say(
        f"  -> slid to {int(IDLE * 1000)} ms while far from the cap, then capped; the session"
        f" died {alive_for:.2f}s after login despite activity (absolute {ABSOLUTE}s)"
    )
    capped = [int(x) for x in samples if int(x) < IDLE * 1000 - 50]
    # activity kept it past its idle lifetime, the cap showed, and it died near the absolute end
    ok &= bool(capped) and IDLE < alive_for <= ABSOLUTE + 1.0

    idle = store.create({"a": 1})
    begun = time.monotonic()
    while store.ttl(idle.id) is not None and time.monotonic() - begun < IDLE + 2:
        time.sleep(0.02)
    idle_for = time.monotonic() - begun
    ctx.say(f"idle expiry: an untouched session was gone after {idle_for:.2f}s (idle {IDLE}s)")
    ok &= store.get(idle.id) is None and idle_for <= IDLE + 1.0

    devices = [store.create({"device": d}, user_id="bob").id for d in ("phone", "laptop", "tv")]
    listed = len(store.sessions_of("bob"))
    deleted = store.destroy_user("bob")
    remaining = sum(int(client.exists(store._core._key_of(d))) for d in devices)
    ctx.say(
        f"log out everywhere: bob had {listed} sessions, destroy_user deleted {deleted},"
        f" keys left: {remaining}"
    )
    ok &= listed == 3 and deleted == 3 and remaining == 0
    client.close()
    return bool(ok)
