"""Cache-aside with stampede protection: get_or_load, the @cached decorator, invalidation."""

from __future__ import annotations

import time

import redis_patterns
from redis_patterns import Cache

client = redis_patterns.connect()  # REDIS_URL, or an embedded server
cache = Cache(client, namespace="example.users", ttl=300)

DATABASE = {42: {"id": 42, "name": "Ada"}}
queries = 0


def load_user(user_id: int) -> dict[str, object]:
    global queries
    queries += 1
    time.sleep(0.05)  # a slow query
    return dict(DATABASE[user_id])


# get_or_load: one EVALSHA on a hit; on a miss one caller loads, the others wait for it.
user = cache.get_or_load("user:42", lambda: load_user(42))
assert cache.get_or_load("user:42", lambda: load_user(42)) == user
assert queries == 1


# The decorator builds a stable key from the arguments (or use key="user:{user_id}").
@cache.cached(ttl=60, key="user:{user_id}")
def get_user(user_id: int) -> dict[str, object]:
    return load_user(user_id)


assert get_user(42) == user  # same key as above: a hit
DATABASE[42]["name"] = "Ada Lovelace"  # the write path: update the database ...
get_user.invalidate(42)  # ... then invalidate; a load already running cannot store stale data
assert get_user(42)["name"] == "Ada Lovelace"
print(f"user: {get_user(42)}, database queries: {queries}")
