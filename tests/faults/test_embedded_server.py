"""EmbeddedServer must-shows: no process left behind, no orphan when the parent dies, log tails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

import redis_patterns
from redis_patterns import EmbeddedCluster, EmbeddedServer, EmbeddedServerError

pytestmark = pytest.mark.fault

WAIT = 20.0


def _alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_start_stop_twenty_times_leaves_no_process() -> None:
    server = EmbeddedServer()
    pids: list[int] = []
    ports: set[int] = set()
    try:
        for _ in range(20):
            server.start()
            assert server.pid is not None
            pids.append(server.pid)
            ports.add(server.port or 0)
            assert f"127.0.0.1:{server.port}" in _cmdline(server.pid)  # its process title
            with server.client() as client:
                assert client.ping()
            server.stop()
            assert server.pid is None
            assert not _alive(pids[-1])  # stop() waited for it: gone at once, not eventually
    finally:
        server.stop()
        server.cleanup()
    assert len(set(pids)) == 20
    assert not any(_alive(pid) for pid in pids)
    # And no server process anywhere on the machine still serves one of those ports.
    titles = [_cmdline(int(p)) for p in os.listdir("/proc") if p.isdigit() and _alive(int(p))]
    leftovers = [t for t in titles if "-server" in t and any(f":{port} " in t for port in ports)]
    assert leftovers == []
    assert not server.dir.exists()  # cleanup removed the temporary directory


_CHILD = r"""
import sys, time
from redis_patterns import EmbeddedServer
server = EmbeddedServer().start()
print(server.pid, flush=True)
time.sleep(600)
"""


def test_killed_parent_leaves_no_orphan_server() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # bounded by the child's own start timeout
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else line
        server_pid = int(line)
        assert _alive(server_pid)
        assert "valkey-server" in _cmdline(server_pid)
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only the reaper can help
        child.wait(WAIT)
        assert _wait_gone(server_pid), f"server {server_pid} outlived its SIGKILLed parent"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_invalid_directive_raises_with_the_servers_explanation() -> None:
    server = EmbeddedServer(config={"no-such-directive-xyz": "1"})
    try:
        with pytest.raises(EmbeddedServerError) as caught:
            server.start()
        text = str(caught.value)
        assert "during start-up" in text
        assert "no-such-directive-xyz" in text  # the server's own complaint, quoted
        assert server.pid is None
    finally:
        server.cleanup()


def test_port_taken_raises_with_the_log_tail() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedServer(port=port)  # a fixed port is not retried elsewhere
        try:
            with pytest.raises(EmbeddedServerError) as caught:
                server.start()
        finally:
            server.cleanup()
    text = str(caught.value)
    assert "in use" in text  # from the server's log file
    assert len(text.splitlines()) > 1


def test_pause_resume_kill_restart(server_factory: object) -> None:
    assert callable(server_factory)
    server: EmbeddedServer = server_factory()
    with redis_patterns.connect(server.url, socket_timeout=0.3) as client:  # no retries
        client.set("k", "v")
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        server.resume()
    with server.client(socket_timeout=WAIT) as client:
        assert client.get("k") == b"v"
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not _alive(pid)
        with pytest.raises(EmbeddedServerError):
            server.pause()
        server.restart()
        assert server.running
        assert client.get("k") is None  # no persistence: a restart starts empty


def test_cluster_serves_keys_in_every_masters_slots(cluster: EmbeddedCluster) -> None:
    owners: dict[int, str] = {}
    with cluster.client() as client:
        for index, node in enumerate(cluster.nodes):
            key = _key_on(cluster, index)
            client.set(key, f"value-{index}")
            assert client.get(key) == f"value-{index}".encode()
            with node.client() as direct:  # the key really lives on this master
                assert direct.get(key) == f"value-{index}".encode()
            owners[index] = key
    assert len(owners) == len(cluster.nodes) == 3


def _key_on(cluster: EmbeddedCluster, index: int) -> str:
    from redis.crc import key_slot

    count = len(cluster.nodes)
    first, last = index * 16384 // count, (index + 1) * 16384 // count - 1
    for n in range(100000):
        key = f"faults-slot-{os.getpid()}-{n}"
        if first <= key_slot(key.encode()) <= last:
            return key
    raise AssertionError("no key found for the slot range")


def test_client_of_a_server_never_started_says_so() -> None:
    from redis_patterns import EmbeddedCluster, EmbeddedServer, EmbeddedServerError

    with pytest.raises(EmbeddedServerError, match="start"):
        EmbeddedServer().client()
    with pytest.raises(EmbeddedServerError, match="not running"):
        EmbeddedCluster(3).client()
