"""A Flask view behind @rate_limit: 429 with Retry-After and RateLimit-* headers."""

from __future__ import annotations

import flask

import redis_patterns as rp
from redis_patterns.integrations.ratelimit_flask import rate_limit

client = rp.connect()
limiter = rp.GCRA(client, limit=2, period=10)  # 2 per 10 s, one every 5 s
app = flask.Flask(__name__)


@app.get("/search")
@rate_limit(limiter, key=lambda: flask.request.args.get("user"))  # default key: client address
def search() -> dict[str, str]:
    return {"results": "..."}


def main() -> None:
    limiter.reset("alice")
    http = app.test_client()
    codes = []
    for _ in range(3):
        answer = http.get("/search?user=alice")
        codes.append(answer.status_code)
        print(answer.status_code, answer.headers.get("RateLimit-Remaining"))
    print("Retry-After:", answer.headers["Retry-After"])
    assert codes == [200, 200, 429]
    client.close()


if __name__ == "__main__":
    main()
