"""The ``redis-patterns`` command, run as a user would run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import redis

from redis_patterns import __version__

CLI = [sys.executable, "-m", "redis_patterns.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"redis-patterns {__version__}"


def test_demo_lists_its_sections() -> None:
    result = run("demo", "--list")
    assert result.returncode == 0
    assert "counter" in result.stdout


def test_demo_counter_section_measures_the_race() -> None:
    result = run("demo", "counter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BoundedCounter (one script):           final value 100, overshoot 0" in result.stdout
    assert "behaved as promised" in result.stdout


def test_demo_unknown_section_is_an_error() -> None:
    result = run("demo", "no-such-section")
    assert result.returncode == 2
    assert "unknown section" in result.stdout


def test_server_runs_in_the_foreground_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [*CLI, "server"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    with process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "is listening at redis://127.0.0.1:" in line, line
            url = line.split(" at ")[1].split()[0]
            pid = int(line.split("(pid ")[1].rstrip(")\n"))
            with redis.Redis.from_url(url) as client:
                assert client.ping()
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the server outlived `redis-patterns server`"


def test_bench_prints_a_table_with_commands_per_operation() -> None:
    result = run("bench", "-n", "200", "redis-py GET", "BoundedCounter.incr")
    assert result.returncode == 0, result.stderr
    assert "BoundedCounter.incr" in result.stdout
    assert "cmds/op" in result.stdout


def test_demo_only_option_selects_sections() -> None:
    result = run("demo", "--only", "counter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/1] BoundedCounter" in result.stdout


def test_demo_output_is_plain_text_when_piped() -> None:
    result = run("demo", "--only", "counter")
    assert "\x1b[" not in result.stdout


def test_the_whole_tour_behaves() -> None:
    result = run("demo", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "All 8 section(s) behaved as promised." in result.stdout


def test_server_on_a_taken_port_fails_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("server", "--port", str(taken.getsockname()[1]), timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("redis-patterns server: could not start the server:")
    assert "already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_without_a_url_says_how_to_give_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [*CLI, "check"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
