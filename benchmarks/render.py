"""Turn the harness's results (the JSON of `benchmarks.run`) into Markdown tables and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Issue 16's rows: (operation, group, ours, peers it is compared with: the fastest correct one).
SUMMARY: list[tuple[str, str, str, list[str]]] = [
    (
        "lock acquire+release",
        "lock",
        "redis-patterns Lock",
        ["redis-py Lock", "pottery Redlock (1 node)", "python-redis-lock"],
    ),
    ("fixed window hit", "limiter", "redis-patterns FixedWindow", ["limits fixed window"]),
    (
        "sliding log hit",
        "limiter",
        "redis-patterns SlidingLog",
        ["limits moving window", "pyrate-limiter (Redis log)"],
    ),
    (
        "sliding window counter hit",
        "limiter",
        "redis-patterns SlidingWindow",
        ["limits sliding window counter"],
    ),
    ("token bucket hit", "limiter", "redis-patterns TokenBucket", ["limits fixed window"]),
    ("GCRA hit", "limiter", "redis-patterns GCRA", ["limits fixed window"]),
    ("cache hit, 100 B (sync)", "cache", "redis-patterns Cache.get", ["dogpile.cache get"]),
    (
        "cache hit, 100 B (asyncio)",
        "acache",
        "redis-patterns AsyncCache.get",
        ["cashews get", "aiocache get"],
    ),
    ("session read", "session", "redis-patterns SessionStore.get", ["Flask-Session read"]),
]
# 100 concurrent tasks: (operation, group, ours, peers), compared by throughput.
CONCURRENT: list[tuple[str, str, str, list[str]]] = [
    (
        "fixed window hits",
        "climiter",
        "redis-patterns FixedWindow",
        ["limits fixed window (async)"],
    ),
    (
        "sliding log hits",
        "climiter",
        "redis-patterns SlidingLog",
        ["limits moving window (async)"],
    ),
    (
        "sliding window counter hits",
        "climiter",
        "redis-patterns SlidingWindow",
        ["limits sliding window counter (async)"],
    ),
    (
        "token bucket hits",
        "climiter",
        "redis-patterns TokenBucket",
        ["limits fixed window (async)"],
    ),
    ("GCRA hits", "climiter", "redis-patterns GCRA", ["limits fixed window (async)"]),
    ("cache hits", "ccache", "redis-patterns AsyncCache.get", ["cashews get", "aiocache get"]),
]
# 100 concurrent tasks on a 3-master cluster (group "ccluster"): (operation, ours, peers);
# ours is also shown without batching, and against the ceiling.
CLUSTER_GROUP = "ccluster"
CLUSTER_CEILING = "raw pipelines per master (100 GETs)"
OFF = " without batching"
CLUSTER: list[tuple[str, str, list[str]]] = [
    ("fixed window hits", "redis-patterns FixedWindow", ["limits fixed window (async)"]),
    ("cache hits", "redis-patterns AsyncCache.get", ["cashews get", "aiocache get"]),
]


def _f(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _per_node(values: list[float] | None) -> str:
    """Operations per server read, one figure per node (a cluster's masters)."""
    if not values:
        return "-"
    return ", ".join(f"{value:.0f}" if value >= 10 else f"{value:.1f}" for value in values)


def _rows(data: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    for g in data["groups"]:
        if g["key"] == group:
            return {row["name"]: row for row in g["rows"]}
    return {}


def _ok(row: dict[str, Any] | None) -> bool:
    return row is not None and row["status"] == "ok"


def _best_peer(
    rows: dict[str, dict[str, Any]], peers: list[str], key: str, lowest: bool = True
) -> dict[str, Any] | None:
    """The fastest peer whose probe passed (or that has no probe)."""
    usable = [rows[p] for p in peers if _ok(rows.get(p)) and rows[p]["correct"] is not False]
    usable = [r for r in usable if r[key] is not None]
    if not usable:
        return None
    return (min if lowest else max)(usable, key=lambda r: r[key])


def _gap(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return "-"
    return f"{ours / peer:.2f}"


def summary(data: dict[str, Any]) -> list[str]:
    lines = [
        "| operation | ours: x GET | ours: server µs | fastest correct peer | peer: x GET "
        "| peer: server µs | per call, ours / peer | server, ours / peer |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for label, group, ours_name, peers in SUMMARY:
        rows = _rows(data, group)
        ours = rows.get(ours_name)
        if not _ok(ours):
            continue
        assert ours is not None
        peer = _best_peer(rows, peers, "ratio")
        if peer is None:
            lines.append(
                f"| {label} | {_f(ours['ratio'], 2)} | {_f(ours['server_us'])} | "
                "(none installed) | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {label} | {_f(ours['ratio'], 2)} | {_f(ours['server_us'])} | {peer['name']} | "
            f"{_f(peer['ratio'], 2)} | {_f(peer['server_us'])} | "
            f"{_gap(ours['ratio'], peer['ratio'])} | {_gap(ours['server_us'], peer['server_us'])} |"
        )
    lines += [
        "",
        "| 100 concurrent tasks | ours: ops/s | best peer | peer: ops/s | ours / peer |",
        "|---|---:|---|---:|---:|",
    ]
    for label, group, ours_name, peers in CONCURRENT:
        rows = _rows(data, group)
        ours = rows.get(ours_name)
        if not _ok(ours):
            continue
        assert ours is not None
        peer = _best_peer(rows, peers, "throughput", lowest=False)
        shown = peer["name"] if peer else "(none installed)"
        peer_rate = peer["throughput"] if peer else None
        lines.append(
            f"| {label} | {_f(ours['throughput'], 0)} | {shown} | {_f(peer_rate, 0)} | "
            f"{_gap(ours['throughput'], peer_rate)} |"
        )
    lines += cluster_summary(data)
    cache_rows = _scan_rows(data, "cache-size")
    get, floor = cache_rows.get("Cache.get (hit)"), cache_rows.get("redis-py GET (floor)")
    if get and floor:
        lines += [
            "",
            "| cache hit by value size | ours: server µs | GET: server µs | ours / GET "
            "| ours: server CPU µs | GET: server CPU µs | ours / GET |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for column, cell in get["cells"].items():
            base = floor["cells"].get(column)
            if base is None:
                continue
            lines.append(
                f"| {column} | {_f(cell['server_us'])} | {_f(base['server_us'])} | "
                f"{_gap(cell['server_us'], base['server_us'])} | {_f(cell['server_cpu_us'])} | "
                f"{_f(base['server_cpu_us'])} | "
                f"{_gap(cell['server_cpu_us'], base['server_cpu_us'])} |"
            )
    return lines


def cluster_summary(data: dict[str, Any]) -> list[str]:
    """The cluster rows of goal 3: ours with batching on and off, the ceiling, the best peer,
    and how many operations each master read per socket read (its batch size)."""
    rows = _rows(data, CLUSTER_GROUP)
    ceiling = rows.get(CLUSTER_CEILING)
    ceiling_rate = ceiling["throughput"] if _ok(ceiling) and ceiling else None
    lines = [
        "",
        "| 100 concurrent tasks, 3-master cluster | batching on: ops/s | off: ops/s | on / off "
        "| ceiling: ops/s | on / ceiling | best peer | peer: ops/s | on / peer "
        "| ops per server read, by master: on | off |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for label, ours_name, peers in CLUSTER:
        ours, off = rows.get(ours_name), rows.get(ours_name + OFF)
        if not _ok(ours):
            continue
        assert ours is not None
        off_rate = off["throughput"] if _ok(off) and off else None
        peer = _best_peer(rows, peers, "throughput", lowest=False)
        shown = peer["name"] if peer else "(none installed)"
        peer_rate = peer["throughput"] if peer else None
        off_reads = _per_node(off["ops_per_read"]) if _ok(off) and off else "-"
        reads = f"{_per_node(ours['ops_per_read'])} | {off_reads}"
        lines.append(
            f"| {label} | {_f(ours['throughput'], 0)} | {_f(off_rate, 0)} | "
            f"{_gap(ours['throughput'], off_rate)} | {_f(ceiling_rate, 0)} | "
            f"{_gap(ours['throughput'], ceiling_rate)} | {shown} | {_f(peer_rate, 0)} | "
            f"{_gap(ours['throughput'], peer_rate)} | {reads} |"
        )
    return lines if len(lines) > 3 else []


def group_table(group: dict[str, Any]) -> list[str]:
    concurrent = group["mode"] == "concurrent"
    lines = [f"#### {group['title']}", ""]
    if group.get("topology") == "cluster":
        lines += [
            "Measured on the cluster: server columns are summed over the masters; ops per "
            "server read is per master (its `total_reads_processed`), the batch size it saw.",
            "",
        ]
    if group["note"]:
        lines += [group["note"] + ".", ""]
    if concurrent:
        lines += [
            "| contender | ops/s | x GET | client CPU µs | server µs | server CPU µs | "
            "request B | commands | writes | ops per server read | top-level commands "
            "| inside scripts / EXEC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
    else:
        lines += [
            "| contender | x GET (range) | µs/call | client CPU µs | server µs | server CPU µs | "
            "request B | commands | round trips | top-level commands | inside scripts / EXEC "
            "| correct |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
    blank = lines[-1].count("|") - 3  # the cells after a failed row's name and status
    for row in group["rows"]:
        name = row["name"] + (f" ({row['note']})" if row["note"] else "")
        if row["status"] != "ok":
            lines.append(f"| {name} | {row['status']} |" + " |" * blank)
            continue
        reads = f" {_per_node(row['ops_per_read'])} |" if concurrent else ""
        common = (
            f"{_f(row['client_us'])} | {_f(row['server_us'])} | {_f(row['server_cpu_us'])} | "
            f"{_f(row['bytes'], 0)} | {_count(row['commands'])} | {_count(row['round_trips'])} |"
            f"{reads} {row['names'] or '(none)'} | {row['inside'] or '-'}"
        )
        if concurrent:
            lines.append(
                f"| {name} | {_f(row['throughput'], 0)} | {_f(row['ratio'], 2)} | {common} |"
            )
            continue
        spread = (
            f"{_f(row['ratio'], 2)} ({_f(row['ratio_lo'], 2)}-{_f(row['ratio_hi'], 2)})"
            if row["ratio"] is not None
            else "-"
        )
        correct = row["probe"] or "-"
        if row["correct"] is False:
            correct = f"**no**: {correct}"
        lines.append(f"| {name} | {spread} | {_f(row['wall_us'])} | {common} | {correct} |")
    return [*lines, ""]


def _scan_rows(data: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    for scan in data.get("scans", []):
        if scan["key"] == key:
            return {row["name"]: row for row in scan["rows"]}
    return {}


def scan_table(scan: dict[str, Any]) -> list[str]:
    columns = scan["columns"]
    lines = [
        f"#### {scan['title']}",
        "",
        f"{scan['note']}. Each cell: server µs (commandstats) / server CPU µs / "
        "client CPU µs, per operation.",
        "",
    ]
    lines.append(f"| operation ({scan['parameter']}) | " + " | ".join(columns) + " | commands |")
    lines.append("|---|" + "---:|" * len(columns) + "---|")
    for row in scan["rows"]:
        cells = []
        for column in columns:
            cell = row["cells"].get(column)
            cells.append(
                f"{_f(cell['server_us'])} / {_f(cell['server_cpu_us'])} / {_f(cell['client_us'])}"
                if cell
                else ("n/a" if row["status"] == "ok" else row["status"])
            )
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {row['commands']} |")
    return [*lines, ""]


def markdown(data: dict[str, Any], chart: str | None) -> str:
    meta = data["meta"]
    lines = [
        f"Harness: `python -m benchmarks.run{meta['flags']}` ({meta['seconds']:.0f} s), "
        f"{meta['server']} started by the harness and used by nobody else; {meta['pinning']}. "
        f"Load average {meta['load_before']} before, {meta['load_after']} after. "
        f"Sequential rows: {meta['rounds']} interleaved rounds of {meta['calls']} calls per "
        "contender; x GET is the median of the per-round ratios of time per call to the GET "
        f"baseline in the same round (range: lowest-highest round). Concurrent rows: "
        f"{meta['tasks']} tasks, {meta['concurrent_rounds']} rounds of "
        f"{meta['concurrent_calls']} operations."
        + (f" Cluster rows: {meta['cluster']}." if meta.get("cluster") else ""),
        "",
        "Columns (see *How the harness measures* in docs/benchmarks.md): client CPU µs is "
        "`process_time` per call; server µs is `INFO commandstats` usec of the top-level "
        "commands (nested calls not counted twice); server CPU µs is the server process's CPU "
        "per call; request B is bytes the server read; commands from MONITOR; round trips "
        "(writes) from redis-py's socket writes. Counts are exact; every time is indicative.",
        "",
        "### Summary: ours against the fastest correct peer",
        "",
        *summary(data),
        "",
    ]
    if chart:
        lines += [f"![ours vs the peers: per-call ratio to GET and server µs]({chart})", ""]
    lines += ["### Per operation", ""]
    for group in data["groups"]:
        lines += group_table(group)
    if data.get("scans"):
        lines += ["### Cost by size (goal 4)", ""]
        for scan in data["scans"]:
            lines += scan_table(scan)
    return "\n".join(lines).rstrip() + "\n"


def _labelled(row: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    """The row, its name marked when it was measured on the cluster (names repeat)."""
    if group.get("topology") != "cluster":
        return row
    return {**row, "name": row["name"] + " (cluster)"}


COLORS = {"ours": "#c0392b", "peer": "#2c7fb8", "floor": "#999999"}


def _bars(ax: Any, entries: list[tuple[str, dict[str, Any]]], key: str, fmt: str) -> None:
    """Horizontal bars, top to bottom, a rule between groups, the value at each bar's end."""
    positions = list(range(len(entries)))[::-1]
    values = [row[key] or 0.0 for _, row in entries]
    ax.barh(positions, values, color=[COLORS[row["kind"]] for _, row in entries])
    for y, value in zip(positions, values, strict=True):
        ax.text(value, y, " " + format(value, fmt), va="center", fontsize=7)
    for index in range(1, len(entries)):
        if entries[index][0] != entries[index - 1][0]:
            ax.axhline(positions[index] + 0.5, color="#dddddd", linewidth=0.8)
    ax.margins(x=0.15)


def chart(data: dict[str, Any], path: Path) -> bool:
    """Per-call ratio to GET and server µs for every sequential row, and throughput of the
    concurrent ones; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False

    def entries(concurrent: bool, key: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (group["key"], _labelled(row, group))
            for group in data["groups"]
            if (group["mode"] == "concurrent") == concurrent
            for row in group["rows"]
            if row["status"] == "ok" and row[key] is not None
        ]

    sequential = [e for e in entries(False, "ratio") if e[1]["kind"] != "floor"]
    concurrent = entries(True, "throughput")
    heights = [0.26 * len(sequential) + 1.2] + ([0.26 * len(concurrent) + 1.2] * bool(concurrent))
    fig, axes = plt.subplots(
        len(heights),
        2,
        figsize=(13, sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    ratio_ax, server_ax = axes[0]
    _bars(ratio_ax, sequential, "ratio", ".2f")
    ratio_ax.axvline(1.0, color="black", linewidth=0.8)
    positions = list(range(len(sequential)))[::-1]
    ratio_ax.set_yticks(positions, [row["name"] for _, row in sequential], fontsize=8)
    ratio_ax.set_xlabel("time per call / raw GET's in the same round (lower is faster)")
    _bars(server_ax, sequential, "server_us", ".1f")
    server_ax.set_yticks(positions, [""] * len(positions))
    server_ax.set_xlabel("server µs per call (INFO commandstats, top-level commands)")
    handles = [Patch(color=c) for c in COLORS.values()]
    labels = ["redis-patterns", "peer", "floor"]
    if concurrent:
        rate_ax, legend_ax = axes[1]
        _bars(rate_ax, concurrent, "throughput", ",.0f")
        spots = list(range(len(concurrent)))[::-1]
        rate_ax.set_yticks(spots, [row["name"] for _, row in concurrent], fontsize=8)
        rate_ax.set_xlabel("operations/s with 100 concurrent asyncio tasks (higher is better)")
        legend_ax.axis("off")
        legend_ax.legend(handles, labels, loc="center")
    else:
        server_ax.legend(handles, labels, loc="lower right")
    meta = data["meta"]
    fig.suptitle(f"redis-patterns vs peers: {meta['server']}, {meta['date']}{meta['flags']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
