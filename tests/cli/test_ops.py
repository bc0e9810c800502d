"""``redis-patterns queue | locks | limits`` against real servers (standalone and cluster)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from typing import Any

import pytest

from redis_patterns import (
    GCRA,
    FixedWindow,
    Lock,
    SlidingLog,
    SlidingWindow,
    StreamMessage,
    StreamQueue,
    TokenBucket,
    Worker,
)
from redis_patterns.cli import main
from redis_patterns.testing.pytest_plugin import Backend

CLI = [sys.executable, "-m", "redis_patterns.cli"]


def url_of(backend: Backend) -> str:
    return backend.servers[0].url


def run_json(capsys: pytest.CaptureFixture[str], backend: Backend, *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*argv, "--url", url_of(backend), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def _fail(message: StreamMessage) -> None:
    raise ValueError(f"no handler for {message.data['n']}")


def queue_with_dead_and_pending(client: Any, name: str) -> StreamQueue:
    """Three dead letters, two entries pending to consumer 'stuck', one never read."""
    queue = StreamQueue(client, name)
    for n in range(3):
        queue.add({"n": n})
    worker = Worker(queue, "failing", _fail, max_deliveries=1, block=0.05, reap_idle=None)
    while queue.info().dead_letters < 3:
        worker.run_once()
    for n in range(3, 5):
        queue.add({"n": n})
    client.xreadgroup("workers", "stuck", {queue.key: ">"}, count=2)
    queue.add({"n": 5})
    return queue


def test_queue_list_info_pending_and_dead(
    backend: Backend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = backend.client()
    queue_with_dead_and_pending(client, prefix)
    StreamQueue(client, prefix + "-empty").add({"n": 0})  # no one read it: lag 1

    code, listed = run_json(capsys, backend, "queue", "list", prefix + "*")
    assert code == 0
    rows = {r["name"]: r for r in listed["queues"]}
    assert set(rows) == {prefix, prefix + "-empty"}  # found on whichever node holds them
    assert {k: rows[prefix][k] for k in ("group", "length", "lag", "pending", "dead_letters")} == {
        "group": "workers",
        "length": 6,
        "lag": 1,
        "pending": 2,
        "dead_letters": 3,
    }
    assert rows[prefix]["consumers"] == 2  # failing, stuck
    assert (rows[prefix + "-empty"]["lag"], rows[prefix + "-empty"]["pending"]) == (1, 0)

    code, info = run_json(capsys, backend, "queue", "info", prefix)
    assert code == 0
    assert info["group"] == "workers"
    assert info["info"]["length"] == 6
    assert {c["name"]: c["pending"] for c in info["info"]["consumers"]} == {
        "failing": 0,
        "stuck": 2,
    }

    code, pending = run_json(capsys, backend, "queue", "pending", prefix)
    assert [(p["consumer"], p["deliveries"]) for p in pending["pending"]] == [("stuck", 1)] * 2
    assert all(p["idle"] >= 0 for p in pending["pending"])

    code, dead = run_json(capsys, backend, "queue", "dead", prefix, "--count", "2")
    assert code == 0
    letters = dead["dead_letters"]
    assert [d["data"] for d in letters] == [{"n": 0}, {"n": 1}]
    assert letters[0]["error"] == "ValueError: no handler for 0"
    assert (letters[0]["deliveries"], letters[0]["consumer"]) == (1, "failing")

    code, missing = run_json(capsys, backend, "queue", "info", prefix + "-nothing")
    assert code == 1
    assert missing["info"]["group_exists"] is False


def test_replay_and_purge_need_yes_without_a_terminal(
    backend: Backend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = backend.client()
    queue = queue_with_dead_and_pending(client, prefix)
    letters = queue.dead_letters()
    code = main(["queue", "replay", prefix, "--url", url_of(backend)])
    assert code == 2
    assert "pass --yes" in capsys.readouterr().err
    assert main(["queue", "purge", prefix, "--url", url_of(backend)]) == 2
    assert len(queue.dead_letters()) == 3  # nothing happened

    code, replayed = run_json(capsys, backend, "queue", "replay", prefix, letters[0].id, "--yes")
    assert code == 0
    assert list(replayed["replayed"]) == [letters[0].id]
    seen: list[StreamMessage] = []
    worker = Worker(queue, "fixed", seen.append, block=0.05, reap_idle=None)
    while not any(m.replays for m in seen):
        worker.run_once()
    [again] = [m for m in seen if m.replays]
    assert (again.data, again.original_id) == ({"n": 0}, letters[0].original_id)

    code, purged = run_json(capsys, backend, "queue", "purge", prefix, letters[1].id, "--yes")
    assert (code, purged) == (0, {"name": prefix, "purged": 1})
    code, replayed = run_json(capsys, backend, "queue", "replay", prefix, "--yes")
    assert list(replayed["replayed"]) == [letters[2].id]
    code, purged = run_json(capsys, backend, "queue", "purge", prefix, "--yes")
    assert purged == {"name": prefix, "purged": 0}
    code, replayed = run_json(capsys, backend, "queue", "replay", prefix, "1-1", "--yes")
    assert (code, replayed["missing"]) == (1, ["1-1"])


def _in_terminal(argv: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin and stdout, typing ``answer`` when asked."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *argv], stdin=follower, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(leader, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(10), output.decode(errors="replace")


@pytest.mark.backends("valkey")
def test_a_terminal_asks_before_replaying_and_shows_tables(backend: Backend, prefix: str) -> None:
    queue = queue_with_dead_and_pending(backend.client(), prefix)
    code, output = _in_terminal(["queue", "replay", prefix, "--url", url_of(backend)], "n")
    assert code == 2
    assert f"Replay all 3 dead letter(s) of queue '{prefix}'?" in output
    assert len(queue.dead_letters()) == 3
    code, output = _in_terminal(["queue", "replay", prefix, "--url", url_of(backend)], "y")
    assert code == 0
    assert output.count("replayed ") == 3
    assert queue.dead_letters() == []
    code, output = _in_terminal(["queue", "list", prefix, "--url", url_of(backend)], "")
    assert code == 0
    assert "stream queues" in output
    assert "━" in output or "─" in output  # a rich table, not plain text


def test_locks_show_ttl_and_fence_never_the_token(
    backend: Backend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = backend.client()
    names = [f"{prefix}:orders:{n}" for n in range(6)]
    held = [Lock(client, name, ttl=30.0) for name in names]
    for lock in held:
        assert lock.acquire()
    other = Lock(client, f"{prefix}:reports", ttl=10.0)
    other.acquire()
    released = Lock(client, f"{prefix}:orders:gone", ttl=10.0)
    released.acquire()
    released.release()

    code, listed = run_json(capsys, backend, "locks", f"{prefix}:orders:*")
    assert code == 0
    by_name = {entry["name"]: entry for entry in listed["locks"]}
    assert set(by_name) == set(names)  # found across every master of a cluster
    for name, lock in zip(names, held, strict=True):
        assert by_name[name]["fence"] == lock.fence
        assert 25 < by_name[name]["ttl"] <= 30
    assert set(listed["locks"][0]) == {"name", "ttl", "fence"}
    main(["locks", prefix + "*", "--url", url_of(backend)])
    plain = capsys.readouterr().out
    assert f"{prefix}:reports" in plain
    for lock in [*held, other]:
        assert lock.token is not None
        assert lock.token not in plain


def test_lock_patterns_are_escaped_and_capped(
    backend: Backend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = backend.client()
    for name in ("ab", "a[b]", "a?", "aX"):
        assert Lock(client, f"{prefix}{name}", ttl=30.0).acquire()
    _, listed = run_json(capsys, backend, "locks", f"{prefix}a[b]")
    assert [entry["name"] for entry in listed["locks"]] == [f"{prefix}a[b]"]
    _, listed = run_json(capsys, backend, "locks", f"{prefix}a?")
    assert [entry["name"] for entry in listed["locks"]] == [f"{prefix}a?"]
    assert main(["locks", "x" * 300, "--url", url_of(backend)]) == 2
    assert "maximum is 256" in capsys.readouterr().err
    assert main(["locks", "*" * 9, "--url", url_of(backend)]) == 2
    assert "wildcards" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("algorithm", "make", "expected_type"),
    [
        pytest.param(kind, make, shape, id=kind)
        for kind, make, shape in [
            ("fixed-window", lambda c: FixedWindow(c, 100, 60.0), "string"),
            ("sliding-log", lambda c: SlidingLog(c, 100, 60.0), "zset"),
            ("sliding-window", lambda c: SlidingWindow(c, 100, 60.0), "hash"),
            ("token-bucket", lambda c: TokenBucket(c, 100, 0.5), "string"),
            ("gcra", lambda c: GCRA(c, 100, 60.0), "string"),
        ]
    ],
)
def test_limits_peek_at_a_key_without_consuming(
    backend: Backend,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    algorithm: str,
    make: Any,
    expected_type: str,
) -> None:
    limiter = make(backend.client())
    key = f"{prefix}:user:1"
    for _ in range(7):
        assert limiter.hit(key).allowed
    [redis_key] = limiter.keys(key)
    name = redis_key.decode().split("}:", 1)[1]  # the default suffix, e.g. fw:100:60000000
    code, first = run_json(capsys, backend, "limits", name, key)
    assert code == 0
    assert first["key"] == redis_key.decode()
    assert (first["exists"], first["type"]) == (True, expected_type)
    assert first["algorithm"] == algorithm
    library = limiter.peek(key)
    assert first["decision"]["remaining"] == library.remaining == 93
    assert first["decision"]["limit"] == 100
    _, second = run_json(capsys, backend, "limits", name, key)
    assert second["decision"]["remaining"] == limiter.peek(key).remaining == 93  # consumed none
    assert second["fields"] == first["fields"] or expected_type != "hash"


def test_limits_with_a_custom_name_and_a_missing_key(
    backend: Backend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = backend.client()
    key = f"{prefix}:ip:10.0.0.1"
    login = FixedWindow(client, 5, 60.0, name="login")
    for _ in range(5):
        login.hit(key)
    FixedWindow(client, 100, 60.0).hit(key)
    code, raw = run_json(capsys, backend, "limits", "login", key)
    assert code == 0
    assert raw["decision"] is None  # the limit and window are not in the key
    assert raw["fields"]["value"] == "5"  # the window's counter
    assert raw["algorithm"] is None  # a string: fixed window, token bucket or GCRA
    code, peeked = run_json(
        capsys, backend, "limits", "login", key, "--limiter", "fixed-window:5:60"
    )
    assert peeked["decision"]["allowed"] is False
    assert peeked["decision"]["remaining"] == 0
    assert peeked["decision"]["retry_after"] > 0
    code, absent = run_json(capsys, backend, "limits", "signup", key)
    assert code == 1
    assert absent["exists"] is False
    assert sorted(absent["others"]) == ["fw:100:60000000", "login"]
    assert main(["limits", "login", key, "--limiter", "bogus:1", "--url", url_of(backend)]) == 2
    assert "limiter spec" in capsys.readouterr().err


def test_piped_output_is_plain_text_and_bad_urls_fail_in_one_line(
    valkey_server: Any, prefix: str
) -> None:
    queue = StreamQueue(valkey_server.client(), prefix)
    queue.add({"n": 1})
    result = subprocess.run(
        [*CLI, "queue", "list", prefix, "--url", valkey_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split() == [
        "QUEUE", "GROUP", "LENGTH", "LAG", "PENDING", "CONSUMERS", "OLDEST", "PENDING", "DEAD",
    ]  # fmt: skip
    assert result.stdout.splitlines()[1].split()[:4] == [prefix, "workers", "1", "1"]
    assert "\x1b[" not in result.stdout
    down = subprocess.run(
        [*CLI, "locks", "--url", "redis://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode == 2
    assert down.stderr.startswith("redis-patterns locks: cannot reach redis://127.0.0.1:1")
    assert len(down.stderr.strip().splitlines()) == 1
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    missing = subprocess.run(
        [*CLI, "queue", "list"], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert missing.returncode == 2
    assert "give --url" in missing.stderr
