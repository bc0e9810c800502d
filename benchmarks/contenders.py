"""The contenders the harness measures: ours and each peer's, per operation, with the GET floors.

Every factory builds its operation on its own client (and key) of the harness's server; a peer
that is not installed raises ImportError, which the harness reports as "not installed". Peers
are used as their documentation shows, with their defaults (dogpile's pickle serializer, for
example), each through redis-py, the same driver as ours.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson

import redis_patterns
from benchmarks import bench_locks, bench_ratelimit
from benchmarks.harness import AsyncOp, ClusterEnv, Contender, Env, Group, Kind, NotMeasured, Op

DAY = 86400
FAST = 10**9  # a limit no run reaches: every hit is admitted, so all do the same work
# A 100-byte JSON document (the cache hit's payload).
VALUE: dict[str, Any] = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"]}
VALUE["bio"] = "x" * (100 - len(json.dumps(VALUE | {"bio": ""}, separators=(",", ":"))))
VALUE_JSON = orjson.dumps(VALUE)
assert len(VALUE_JSON) == 100
SESSION = {"user_id": 42, "email": "alice@example.com", "role": "admin", "cart_count": 3}


# --- floors ------------------------------------------------------------------------------------


def _get(env: Env) -> Op:
    client = env.client()
    key = env.name("get")
    client.set(key, VALUE_JSON)
    return lambda: client.get(key)


def _get_orjson(env: Env) -> Op:
    client = env.client()
    key = env.name("get-orjson")
    client.set(key, VALUE_JSON)
    loads = orjson.loads
    return lambda: loads(client.get(key))  # type: ignore[arg-type]


async def _aget(env: Env) -> AsyncOp:
    client = env.aclient()
    key = env.name("aget")
    await client.set(key, VALUE_JSON)
    return lambda: client.get(key)


async def _aget_orjson(env: Env) -> AsyncOp:
    client = env.aclient()
    key = env.name("aget-orjson")
    await client.set(key, VALUE_JSON)
    loads = orjson.loads

    async def op() -> object:
        return loads(await client.get(key))  # type: ignore[arg-type]

    return op


async def _apipeline(env: Env) -> AsyncOp:
    client = env.aclient()
    key = env.name("apipe")
    await client.set(key, VALUE_JSON)

    async def op() -> object:
        pipe = client.pipeline(transaction=False)
        for _ in range(100):
            pipe.get(key)
        return await pipe.execute()

    return op


GET = Contender("redis-py GET", "floor", _get, note="the baseline of every ratio")
AGET = Contender("redis.asyncio GET", "floor", _aget, note="the baseline of every ratio")


# --- locks -----------------------------------------------------------------------------------


def _lock(name: str) -> Contender:
    def make(env: Env) -> Op:
        warnings.simplefilter("ignore")  # pottery warns about a single master: that is the point
        cycle = bench_locks.CANDIDATES[name](env.client())
        return lambda: cycle(0)

    def probe(env: Env) -> tuple[str, bool]:
        shown = bench_locks.exclusion_probe(env.server, bench_locks._factories()[name], 16, 25)
        final, expected = shown.split(" / ")
        return shown + " increments", final == expected

    kind: Kind = "ours" if name.startswith("redis-patterns") else "peer"
    return Contender(name, kind, make, probe=probe)


def lock_group() -> Group:
    return Group(
        "lock",
        "Lock: uncontended acquire + release",
        "sync",
        GET.name,
        (GET, *(_lock(name) for name in bench_locks.CANDIDATES)),
        note="correct: 16 threads x 25 lock-protected GET-then-SET increments lose none",
    )


# --- limiters --------------------------------------------------------------------------------


def _limiter(name: str) -> Contender:
    def hitter(env: Env, limit: int) -> bench_ratelimit.Hit:
        if name in bench_ratelimit.OURS:
            return bench_ratelimit.ours(env.client(), limit, DAY)[name]
        if name in bench_ratelimit.LIMITS_STRATEGIES:
            return bench_ratelimit.limits_hitter(env.url, name, limit, DAY)
        return bench_ratelimit.pyrate_hitter(env.client(), limit, DAY)

    def make(env: Env) -> Op:
        hit, key = hitter(env, FAST), env.name(name)
        return lambda: hit(key)

    def probe(env: Env) -> tuple[str, bool]:
        with bench_ratelimit.quiet():
            admitted = bench_ratelimit.admitted_under_threads(hitter(env, 100))
        return f"{admitted} of 801 admitted", admitted == 100

    kind: Kind = "ours" if name in bench_ratelimit.OURS else "peer"
    return Contender(name, kind, make, probe=probe)


LIMITERS = [
    *bench_ratelimit.OURS,
    *bench_ratelimit.LIMITS_STRATEGIES,
    "pyrate-limiter (Redis log)",
]


def limiter_group() -> Group:
    return Group(
        "limiter",
        "Rate limiters: one hit (all admitted)",
        "sync",
        GET.name,
        (GET, *(_limiter(name) for name in LIMITERS)),
        note=(
            f"limit {FAST:,} per day, one key per contender; correct: at limit 100, 16 threads "
            "x 50 hits after one warm-up hit admit exactly 100"
        ),
    )


# --- cache -----------------------------------------------------------------------------------


def _cache(env: Env, **options: Any) -> redis_patterns.Cache:
    cache = redis_patterns.Cache(env.client(), env.name("cache"), 600, **options)
    cache.set("k", VALUE)
    env.on_close(cache.close)
    return cache


def _ours_cache_get(env: Env) -> Op:
    cache = _cache(env)
    return lambda: cache.get("k")


def _ours_cache_near(env: Env) -> Op:
    import time

    cache = _cache(env, local=1000)
    cache.get("k")
    deadline = time.monotonic() + 5
    while not cache.local_ready and time.monotonic() < deadline:
        time.sleep(0.01)
    cache.get("k")
    return lambda: cache.get("k")


def _ours_cache_load(env: Env) -> Op:
    cache = _cache(env)
    return lambda: cache.get_or_load("k", lambda: VALUE)


def _dogpile(env: Env) -> Any:
    from dogpile.cache import make_region

    region = make_region().configure(
        "dogpile.cache.redis", expiration_time=600, arguments={"url": env.url}
    )
    region.set("k", VALUE)
    return region


def _dogpile_get(env: Env) -> Op:
    region = _dogpile(env)
    return lambda: region.get("k")


def _dogpile_create(env: Env) -> Op:
    region = _dogpile(env)
    return lambda: region.get_or_create("k", lambda: VALUE)


def cache_group() -> Group:
    return Group(
        "cache",
        "Cache hit, 100 B JSON value (sync)",
        "sync",
        GET.name,
        (
            GET,
            Contender("redis-py GET + orjson.loads", "floor", _get_orjson, note="the floor"),
            Contender("redis-patterns Cache.get", "ours", _ours_cache_get),
            Contender("dogpile.cache get", "peer", _dogpile_get, note="default pickle serializer"),
            Contender("redis-patterns Cache.get_or_load", "ours", _ours_cache_load),
            Contender("dogpile.cache get_or_create", "peer", _dogpile_create),
            Contender(
                "redis-patterns Cache.get, near-cache hit",
                "ours",
                _ours_cache_near,
                note="local=1000: served in process",
            ),
        ),
    )


def _aclient(env: Env, *, batching: bool) -> Any:
    """A fresh asyncio client, auto-pipelined (the default) or not."""
    client = env.aclient()
    redis_patterns.autopipeline(client, batching)
    return client


def _ours_acache(*, batching: bool = True) -> Contender:
    async def make(env: Env) -> AsyncOp:
        cache = redis_patterns.AsyncCache(_aclient(env, batching=batching), env.name("ac"), 600)
        await cache.set("k", VALUE)
        env.on_aclose(cache.aclose)
        return lambda: cache.get("k")

    if batching:
        return Contender("redis-patterns AsyncCache.get", "ours", make)
    return Contender("redis-patterns AsyncCache.get without batching", "ours", make, note=_OFF)


# What the "batching off" rows show: the same class on a client without auto-pipelining.
_OFF = "autopipeline(client, False): each call its own write"


async def _cashews(env: Env) -> AsyncOp:
    import cashews

    cache = cashews.Cache()
    cache.setup(env.url)
    key = env.name("cashews")
    await cache.set(key, VALUE, expire=600)
    env.on_aclose(cache.close)
    return lambda: cache.get(key)


async def _aiocache(env: Env) -> AsyncOp:
    import aiocache
    import aiocache.serializers

    cache = aiocache.RedisCache(
        endpoint=env.host,
        port=env.port,
        namespace=env.name("aiocache"),
        serializer=aiocache.serializers.JsonSerializer(),
    )
    await cache.set("k", VALUE, ttl=600)
    env.on_aclose(cache.close)
    return lambda: cache.get("k")


def _async_cache_contenders() -> tuple[Contender, ...]:
    return (
        _ours_acache(),
        _ours_acache(batching=False),
        Contender("cashews get", "peer", _cashews),
        Contender("aiocache get", "peer", _aiocache, note="JsonSerializer"),
    )


def async_cache_group() -> Group:
    return Group(
        "acache",
        "Cache hit, 100 B JSON value (asyncio, one caller)",
        "async",
        AGET.name,
        (
            AGET,
            Contender("redis.asyncio GET + orjson.loads", "floor", _aget_orjson, note="the floor"),
            *_async_cache_contenders(),
        ),
    )


# --- sessions --------------------------------------------------------------------------------


def _ours_session(env: Env) -> Op:
    store = redis_patterns.SessionStore(env.client(), namespace=env.name("s"), idle_ttl=1800)
    sid = store.create(SESSION, user_id="42").id
    return lambda: store.get(sid)


def _flask_session(env: Env, *, refresh: bool) -> Op:
    """Flask-Session's Redis backend: the read it does when a request opens the session, and
    (``refresh``) the SET with a new expiry that a permanent session gets at the end of every
    request (SESSION_REFRESH_EACH_REQUEST, the default): our `get` slides the expiry too."""
    from flask import Flask
    from flask_session.redis import RedisSession, RedisSessionInterface

    client = env.client()
    interface = RedisSessionInterface(
        app=Flask("bench"), client=client, key_prefix=env.name("flask") + ":"
    )
    sid = "s" * 43
    store_id = interface._get_store_id(sid)
    lifetime = timedelta(seconds=1800)
    interface._upsert_session(lifetime, RedisSession(SESSION, sid=sid, permanent=True), store_id)
    read = interface._retrieve_session_data
    if not refresh:
        return lambda: read(store_id)

    def read_and_refresh() -> None:
        data = read(store_id)
        interface._upsert_session(lifetime, RedisSession(data, sid=sid), store_id)

    return read_and_refresh


def session_group() -> Group:
    return Group(
        "session",
        "Session read (4 fields)",
        "sync",
        GET.name,
        (
            GET,
            Contender(
                "redis-patterns SessionStore.get",
                "ours",
                _ours_session,
                note="slides the idle expiry, capped by the absolute one",
            ),
            Contender(
                "Flask-Session read",
                "peer",
                lambda env: _flask_session(env, refresh=False),
                note="RedisSessionInterface._retrieve_session_data: GET + msgpack decode",
            ),
            Contender(
                "Flask-Session read + refresh",
                "peer",
                lambda env: _flask_session(env, refresh=True),
                note="+ the SET EX a permanent session gets per request (slides the expiry)",
            ),
        ),
        note=(
            "Flask-Session's backend methods are called directly, outside a request: the same "
            "commands and decoding a request does, without Flask's request machinery"
        ),
    )


# --- 100 concurrent asyncio tasks -----------------------------------------------------------------


def _ours_alimiter(name: str, *, batching: bool = True) -> Contender:
    async def make(env: Env) -> AsyncOp:
        client = _aclient(env, batching=batching)
        limiter = bench_ratelimit.make_ours(client, name, FAST, DAY, aio=True)
        key = env.name(name)
        return lambda: limiter.hit(key)

    if batching:
        return Contender(name, "ours", make)
    return Contender(name + " without batching", "ours", make, note=_OFF)


def _limits_alimiter(name: str) -> Contender:
    async def make(env: Env) -> AsyncOp:
        import limits
        import limits.aio.storage
        import limits.aio.strategies

        storage = limits.aio.storage.RedisStorage(f"async+{env.url}", implementation="redispy")
        cls = getattr(limits.aio.strategies, bench_ratelimit.LIMITS_STRATEGIES[name])
        strategy, item = cls(storage), limits.RateLimitItemPerSecond(FAST, DAY)
        key = env.name(name)
        return lambda: strategy.hit(item, key)

    return Contender(name + " (async)", "peer", make, note="implementation='redispy'")


def _concurrent_floors() -> tuple[Contender, ...]:
    return (
        Contender("redis.asyncio GET", "floor", _aget, note="the baseline"),
        Contender(
            "redis.asyncio pipeline of 100 GETs",
            "floor",
            _apipeline,
            ops_per_call=100,
            tasks=1,
            note="one task, one connection: what batching can reach",
        ),
    )


def concurrent_limiter_group() -> Group:
    return Group(
        "climiter",
        "100 concurrent asyncio tasks: limiter hits",
        "concurrent",
        AGET.name,
        (
            *_concurrent_floors(),
            *(_ours_alimiter(name) for name in bench_ratelimit.OURS),
            _ours_alimiter("redis-patterns FixedWindow", batching=False),
            *(_limits_alimiter(name) for name in bench_ratelimit.LIMITS_STRATEGIES),
        ),
    )


def concurrent_cache_group() -> Group:
    return Group(
        "ccache",
        "100 concurrent asyncio tasks: cache hits (100 B JSON)",
        "concurrent",
        AGET.name,
        (*_concurrent_floors(), *_async_cache_contenders()),
    )


# --- the ASGI middleware end to end ----------------------------------------------------------


def _asgi(*, limited: bool, batching: bool = True) -> Contender:
    """One GET through httpx's in-process ASGI transport to a Starlette app, with or without
    `RateLimitMiddleware` (a fixed window no run fills, keyed by the client address)."""

    async def make(env: Env) -> AsyncOp:
        import httpx
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        from redis_patterns.integrations.ratelimit_asgi import RateLimitMiddleware

        async def home(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app: Any = Starlette(routes=[Route("/", home)])
        if limited:
            client = _aclient(env, batching=batching)
            limiter = redis_patterns.AsyncFixedWindow(client, FAST, DAY, name=env.name("asgi"))
            app = RateLimitMiddleware(app, limiter=limiter)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        env.on_aclose(http.aclose)

        async def request() -> object:
            response = await http.get("/")
            assert response.status_code == 200
            return response

        return request

    if not limited:
        return Contender("Starlette, no limiter", "floor", make, note="the app alone")
    if batching:
        return Contender("Starlette + RateLimitMiddleware", "ours", make, note="FixedWindow")
    return Contender(
        "Starlette + RateLimitMiddleware without batching",
        "ours",
        make,
        note="FixedWindow; " + _OFF,
    )


def concurrent_asgi_group() -> Group:
    return Group(
        "casgi",
        "100 concurrent asyncio tasks: ASGI requests (httpx.ASGITransport, Starlette)",
        "concurrent",
        "Starlette, no limiter",
        (_asgi(limited=False), _asgi(limited=True), _asgi(limited=True, batching=False)),
        note="requests/s in process: the app, httpx's transport and the middleware share one CPU",
    )


# --- 100 concurrent asyncio tasks on a 3-master cluster ------------------------------------------


def _keys(env: Env, label: str) -> list[str]:
    """One key per task, with no hash tag: their slots spread over the masters."""
    stem = env.name(label)
    return [f"{stem}:{i}" for i in range(env.settings.tasks)]


def _cycling(keys: list[str]) -> Callable[[], str]:
    """Each call the next key: the tasks of one turn use all the keys, every node gets some."""
    return itertools.cycle(keys).__next__


def _cluster_env(env: Env) -> ClusterEnv:
    assert isinstance(env, ClusterEnv), "a cluster group runs on a ClusterEnv"
    return env


async def _first(op: AsyncOp) -> AsyncOp:
    """``op`` after one call alone: redis-py's asyncio cluster client, given 100 concurrent
    commands before it has read the slot map, failed them ("Connection closed by server")."""
    await op()
    return op


async def _cluster_get(env: Env) -> AsyncOp:
    cenv = _cluster_env(env)
    client = cenv.acluster()
    keys = _keys(env, "cget")
    for name in keys:
        await client.set(name, VALUE_JSON)
    key = _cycling(keys)
    return lambda: client.get(key())


async def _node_pipelines(env: Env) -> AsyncOp:
    """The ceiling: the same 100 GETs sorted by master beforehand, sent as one raw redis-py
    pipeline per master on its own connection, the masters' concurrently."""
    cenv = _cluster_env(env)
    by_node: dict[tuple[str, int], list[str]] = {}
    for key in _keys(env, "npipe"):
        by_node.setdefault(cenv.node_of(key), []).append(key)
    clients = []
    for (host, port), keys in by_node.items():
        client = cenv.node_aclient(host, port)
        for key in keys:
            await client.set(key, VALUE_JSON)
        clients.append((client, keys))

    async def send(client: Any, keys: list[str]) -> object:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return await pipe.execute()

    async def op() -> object:
        return await asyncio.gather(*(send(client, keys) for client, keys in clients))

    return op


async def _cluster_pipeline(env: Env) -> AsyncOp:
    client = _cluster_env(env).acluster()
    keys = _keys(env, "cpipe")
    for key in keys:
        await client.set(key, VALUE_JSON)

    async def op() -> object:
        pipe = client.pipeline()
        for key in keys:
            pipe.get(key)
        return await pipe.execute()

    return op


def _cluster_fixed_window(*, batching: bool = True) -> Contender:
    async def make(env: Env) -> AsyncOp:
        client = _cluster_env(env).acluster()
        redis_patterns.autopipeline(client, batching)
        limiter = redis_patterns.AsyncFixedWindow(client, FAST, DAY)
        key = _cycling(_keys(env, "fw"))
        return await _first(lambda: limiter.hit(key()))

    if batching:
        return Contender("redis-patterns FixedWindow", "ours", make)
    return Contender("redis-patterns FixedWindow without batching", "ours", make, note=_OFF)


def _cluster_cache(*, batching: bool = True) -> Contender:
    async def make(env: Env) -> AsyncOp:
        client = _cluster_env(env).acluster()
        redis_patterns.autopipeline(client, batching)
        cache = redis_patterns.AsyncCache(client, env.name("ac"), 600)
        keys = [f"k{i}" for i in range(env.settings.tasks)]
        for name in keys:
            await cache.set(name, VALUE)
        env.on_aclose(cache.aclose)
        key = _cycling(keys)
        return lambda: cache.get(key())

    if batching:
        return Contender("redis-patterns AsyncCache.get", "ours", make)
    return Contender("redis-patterns AsyncCache.get without batching", "ours", make, note=_OFF)


async def _limits_cluster(env: Env) -> AsyncOp:
    import limits
    import limits.aio.storage
    import limits.aio.strategies

    storage = limits.aio.storage.RedisClusterStorage(
        f"async+redis+cluster://{_cluster_env(env).cluster_url}", implementation="redispy"
    )
    strategy = limits.aio.strategies.FixedWindowRateLimiter(storage)
    item = limits.RateLimitItemPerSecond(FAST, DAY)
    key = _cycling(_keys(env, "limits"))
    return await _first(lambda: strategy.hit(item, key()))


async def _cashews_cluster(env: Env) -> AsyncOp:
    """cashews' cluster backend with ``max_connections`` raised to the tasks' number: with
    its default 10, redis-py's cluster client raises `MaxConnectionsError` for the 11th
    concurrent call (it does not wait, as cashews' standalone pool does), and cashews' default
    ``suppress`` turns that into a miss, so most "hits" would not reach the server."""
    import cashews

    cache = cashews.Cache()
    cache.setup(f"{env.url}?cluster=true&max_connections={env.settings.tasks}")
    keys = _keys(env, "cashews")
    for name in keys:
        await cache.set(name, VALUE, expire=600)
    env.on_aclose(cache.close)
    key = _cycling(keys)

    def op() -> Awaitable[object]:  # a plain function, as the other rows' lambdas
        got: Awaitable[object] = cache.get(key())
        return got

    if await asyncio.gather(*(op() for _ in keys)) != [VALUE] * len(keys):
        raise RuntimeError("cashews missed hits under 100 concurrent gets")
    return op


async def _aiocache_cluster(env: Env) -> AsyncOp:
    raise NotMeasured("aiocache's RedisCache connects to one endpoint: it has no cluster client")


CLUSTER_GET = "redis.asyncio RedisCluster GET"


def concurrent_cluster_group() -> Group:
    return Group(
        "ccluster",
        "100 concurrent asyncio tasks on a 3-master cluster: fixed window hits and cache hits",
        "concurrent",
        CLUSTER_GET,
        (
            Contender(CLUSTER_GET, "floor", _cluster_get, note="the baseline, redis-py's routing"),
            Contender(
                "raw pipelines per master (100 GETs)",
                "floor",
                _node_pipelines,
                ops_per_call=100,
                tasks=1,
                note=(
                    "the ceiling: one task, keys sorted by master beforehand, one redis.asyncio "
                    "pipeline per master, the masters' concurrently"
                ),
            ),
            Contender(
                "redis.asyncio RedisCluster pipeline of 100 GETs",
                "floor",
                _cluster_pipeline,
                ops_per_call=100,
                tasks=1,
                note="one task: redis-py's own cluster pipeline, which routes every command",
            ),
            _cluster_fixed_window(),
            _cluster_fixed_window(batching=False),
            Contender(
                "limits fixed window (async)",
                "peer",
                _limits_cluster,
                note="RedisClusterStorage, implementation='redispy'",
            ),
            _cluster_cache(),
            _cluster_cache(batching=False),
            Contender(
                "cashews get", "peer", _cashews_cluster, note="cluster=true, max_connections=100"
            ),
            Contender("aiocache get", "peer", _aiocache_cluster),
        ),
        note=(
            "one key per task (100 keys with no hash tag, spread over the masters), each call "
            "the next key; the masters run on the standalone server's CPUs (one CPU when pinned), "
            "and the cluster client is `EmbeddedCluster.client(asyncio=True)` (configured as "
            "`connect`'s: finite timeouts, no re-sending)"
        ),
        topology="cluster",
    )


def groups() -> list[Group]:
    return [
        lock_group(),
        limiter_group(),
        cache_group(),
        async_cache_group(),
        session_group(),
        concurrent_limiter_group(),
        concurrent_cache_group(),
        concurrent_asgi_group(),
        concurrent_cluster_group(),
    ]
