"""SessionStore basics: create, read (sliding expiry), partial updates, login rotation, logout."""

from __future__ import annotations

from redis_patterns import SessionStore, connect

client = connect()  # REDIS_URL, or an embedded server started for this script
store = SessionStore(client, namespace="example-sessions", idle_ttl=1800, absolute_ttl=8 * 3600)

# an anonymous visitor fills a cart
visitor = store.create({"cart": [], "cart_count": 0})
store.update(visitor.id, {"cart": ["sku-1"]})
store.incr(visitor.id, "cart_count")  # HINCRBY: atomic, no read-modify-write

# login: a new id (session fixation defence), same data, bound to the user
sid = store.rotate(visitor.id, user_id="alice")
assert sid is not None
assert store.get(visitor.id) is None  # the old id is dead at once

session = store.get(sid)  # one round trip: read + sliding refresh, capped by absolute expiry
assert session is not None
print("user:", session.user_id, "data:", dict(session))
print(f"expires in {session.ttl:.0f}s unless used; at the latest at {session.absolute_expires_at}")

# a second device, then "log out everywhere"
store.create({"device": "phone"}, user_id="alice")
print("alice's sessions:", len(store.sessions_of("alice")))
print("deleted:", store.destroy_user("alice"))
assert store.get(sid) is None
