"""Bytes per session (MEMORY USAGE): SessionStore's hash vs a plain hash vs a JSON blob.

Run: ``python benchmarks/bench_sessions.py`` (embedded Valkey, plus Redis 7 if on PATH).
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from redis_patterns import EmbeddedServer, SessionStore

SEED = {"user_id": 42, "email": "alice@example.com", "role": "admin", "cart_count": 3}
BIGGER = dict(
    SEED,
    prefs={"theme": "dark", "lang": "en", "tz": "Europe/Paris"},
    cart=[f"sku-{i}" for i in range(20)],
)


def measure(binary: str | None) -> list[str]:
    rows = []
    with EmbeddedServer(binary) as server:
        client = server.client()
        info = client.info("server")
        name = (
            f"Valkey {info['valkey_version']}"
            if "valkey_version" in info
            else f"Redis {info['redis_version']}"
        )
        for label, data in (("seed's 4 fields", SEED), ("+ prefs + 20-item cart", BIGGER)):
            store = SessionStore(client, idle_ttl=1800, absolute_ttl=8 * 3600)
            key = store._core._key_of(store.create(data, user_id="42").id)
            # same key length for all three, so only the value layout differs
            plain_key, blob_key = key[:-1] + b"P", key[:-1] + b"B"
            plain: dict[str | bytes, Any] = {
                k: v if isinstance(v, int | str) else json.dumps(v) for k, v in data.items()
            }
            client.hset(plain_key, mapping=plain)  # type: ignore[arg-type]
            client.expire(plain_key, 1800)
            meta = {"_user": "42", "_created": 1700000000000, "_abs": 1700028800000}
            client.set(blob_key, json.dumps(data | meta, separators=(",", ":")), ex=1800)
            ours, seed, blob = (
                client.memory_usage(k, samples=0) for k in (key, plain_key, blob_key)
            )
            encoding = client.object("encoding", key).decode()
            rows.append(f"| {name} | {label} | {ours} ({encoding}) | {seed} | {blob} |")
            client.delete(key, plain_key, blob_key, store._core.index_key("42"))
        client.close()
    return rows


def main() -> None:
    print("| server | session | SessionStore hash | plain hash (seed) | JSON blob |")
    print("|---|---|---|---|---|")
    for binary in [None] + (["redis-server"] if shutil.which("redis-server") else []):
        for row in measure(binary):
            print(row)


if __name__ == "__main__":
    main()
