"""The ASGI middleware end to end: requests/s of a real server (uvicorn) driven by `hey`.

Three uvicorn processes serve the same one-route Starlette app: without a limiter, with
`RateLimitMiddleware` (a `FixedWindow` no run fills, keyed by the client address) on an
auto-pipelined asyncio client (the default), and the same with batching off
(``autopipeline(client, False)``). Each round runs ``hey -z <seconds> -c 100`` against each in
turn, the order alternating; the table gives the median requests/s, the median of the per-round
ratios to the app without a limiter, the uvicorn process's CPU per request (its own utime +
stime, from /proc) and the server µs per request (``INFO commandstats`` of the scripts, which
hold the commands they run, as the harness counts top-level commands). Every response must be
a 200: anything else is reported.

uvicorn runs pinned to CPU 0, the embedded Valkey (all its threads) and hey share CPU 1: the
app's one process is what is measured. Needs uvicorn, Starlette and the ``hey`` binary
(``apt install hey``); without them it says so and stops.

``python benchmarks/bench_asgi_hey.py [--rounds 5] [--seconds 4] [--concurrency 100]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the harness's and the report's helpers

from benchmarks.harness import CONTAINERS  # noqa: E402
from benchmarks.report import _version  # noqa: E402
from redis_patterns import EmbeddedServer  # noqa: E402

VARIANTS = (
    ("none", "Starlette, no limiter"),
    ("on", "Starlette + RateLimitMiddleware (FixedWindow), batching on"),
    ("off", "Starlette + RateLimitMiddleware (FixedWindow), batching off"),
)
APP = "benchmarks.asgi_app:create"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"uvicorn exited with status {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"uvicorn did not listen on {port} within 30 s")


def _server_usec(client: Any) -> float:
    """The scripts' usec: the middleware sends nothing else, and each script's holds what it
    runs (summing every command would count those twice, and the INFO itself)."""
    stats = client.info("commandstats")
    return float(sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in CONTAINERS))


def _hey(port: int, seconds: float, concurrency: int) -> tuple[float, int, dict[str, int]]:
    """requests/s, responses, and the count of each status code hey saw."""
    out = subprocess.run(
        ["taskset", "-c", "1", "hey", "-z", f"{seconds}s", "-c", str(concurrency),
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    codes = {m[0]: int(m[1]) for m in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    return rate, sum(codes.values()), codes


def main() -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_asgi_hey.py")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    missing = [name for name in ("uvicorn", "starlette") if importlib.util.find_spec(name) is None]
    missing += [name for name in ("hey", "taskset") if shutil.which(name) is None]
    if missing:
        print(f"not measured: {', '.join(missing)} not installed")
        return 0
    with EmbeddedServer() as server:
        if server.pid is not None:  # every thread of it, as the harness pins it
            subprocess.run(["taskset", "-a", "-cp", "1", str(server.pid)], check=True,
                           capture_output=True)  # fmt: skip
        admin = server.client()
        processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for mode, _ in VARIANTS:
                port = _free_port()
                env = {**os.environ, "RP_BENCH_URL": server.url, "RP_BENCH_MODE": mode}
                env["PYTHONPATH"] = str(ROOT)  # benchmarks.asgi_app
                process = subprocess.Popen(
                    ["taskset", "-c", "0", sys.executable, "-m", "uvicorn", APP, "--factory",
                     "--port", str(port), "--loop", "asyncio", "--http", "h11",
                     "--no-access-log", "--log-level", "warning"],
                    cwd=ROOT, env=env,
                )  # fmt: skip
                processes[mode] = (process, port)
            for process, port in processes.values():
                _wait_listening(port, process)
            for _, port in processes.values():  # warm-up: connections, scripts loaded
                _hey(port, 1.0, args.concurrency)
            rows: dict[str, list[tuple[float, float, float]]] = {m: [] for m, _ in VARIANTS}
            bad: dict[str, dict[str, int]] = {}
            for number in range(args.rounds):
                order = [m for m, _ in VARIANTS][:: 1 if number % 2 == 0 else -1]
                for mode in order:
                    process, port = processes[mode]
                    cpu, usec = _cpu_seconds(process.pid), _server_usec(admin)
                    rate, responses, codes = _hey(port, args.seconds, args.concurrency)
                    cpu = _cpu_seconds(process.pid) - cpu
                    usec = _server_usec(admin) - usec
                    rows[mode].append((rate, cpu / responses * 1e6, usec / responses))
                    if set(codes) - {"200"}:
                        bad[mode] = codes
        finally:
            for process, _ in processes.values():
                process.terminate()
            for process, _ in processes.values():
                process.wait(10)
            admin.close()
    base = rows["none"]
    print(
        f"uvicorn {_version('uvicorn')} (one process, --loop asyncio --http h11) on CPU 0; hey "
        f"-c {args.concurrency} -z {args.seconds:g}s and the embedded Valkey on CPU 1; "
        f"{args.rounds} interleaved rounds."
    )
    print()
    print("| app | requests/s (median) | x no limiter (median of rounds) | uvicorn CPU µs/request "
          "| server µs/request |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for mode, title in VARIANTS:
        mine = rows[mode]
        ratio = statistics.median(m[0] / b[0] for m, b in zip(mine, base, strict=True))
        print(
            f"| {title} | {statistics.median(r[0] for r in mine):,.0f} | {ratio:.2f} | "
            f"{statistics.median(r[1] for r in mine):.0f} | "
            f"{statistics.median(r[2] for r in mine):.1f} |"
        )
    on = statistics.median(a[0] / b[0] for a, b in zip(rows["on"], rows["off"], strict=True))
    print()
    print(f"Batching on / off: {on:.2f}x requests/s (median of the per-round ratios).")
    for mode, codes in bad.items():
        print(f"NOT ALL 200 for {mode}: {codes}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
