"""``redis-patterns demo``: each section runs a real scenario and reports what it measured.

A section is a function registered with `@section`; it receives a `DemoContext` and returns
``True`` when the pattern behaved as promised. Sections live in ``cli/demos/<pattern>.py`` and are
discovered automatically; the demo exits non-zero if any of them misbehaves.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from .._connect import connect
from .._embedded import EmbeddedServer

__all__ = ["DemoContext", "run_demo", "section"]


class _Output:
    """Plain text, or rich panels and tables when stdout is a terminal and rich is installed."""

    def __init__(self) -> None:
        self.console: Any = None
        if sys.stdout.isatty():
            try:
                from rich.console import Console
            except ImportError:
                pass
            else:
                self.console = Console()

    def heading(self, text: str) -> None:
        if self.console is not None:
            from rich.rule import Rule

            self.console.print(Rule(f"[bold]{text}", align="left"))
        else:
            print(text, flush=True)

    def line(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"    {text}", highlight=False, markup=False)
        else:
            print(f"    {text}", flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(c) for c in row] for row in rows]
        if self.console is not None:
            from rich.table import Table

            table = Table(*headers, padding=(0, 1))
            for row in cells:
                table.add_row(*row)
            self.console.print(table)
            return
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
        print("    " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for row in cells:
            print("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))

    def verdict(self, ok: bool, elapsed: float) -> None:
        word = "OK" if ok else "MISBEHAVED"
        if self.console is not None:
            colour = "green" if ok else "bold red"
            self.console.print(f"    -> [{colour}]{word}[/] ({elapsed:.2f}s)\n", highlight=False)
        else:
            print(f"    -> {word} ({elapsed:.2f}s)\n", flush=True)


class _SectionLogHandler(logging.Handler):
    def __init__(self, output: _Output) -> None:
        super().__init__(logging.WARNING)
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        self.output.line(f"  (library log, {record.levelname.lower()}: {record.getMessage()})")


@dataclass
class DemoContext:
    """What a section gets: a URL and client factories for the server under demonstration."""

    url: str
    prefix: str
    lines: list[str] = field(default_factory=list)
    output: _Output = field(default_factory=_Output)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new sync client (no automatic retries, like `connect()`)."""
        return connect(self.url, asyncio=False, **kwargs)

    def async_client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """A new asyncio client; close it with ``await client.aclose()``."""
        return connect(self.url, asyncio=True, **kwargs)

    def key(self, name: str) -> str:
        """A key unique to this demo run."""
        return f"{self.prefix}:{name}"

    def say(self, text: str) -> None:
        """Report one line of what the section measured."""
        self.lines.append(text)
        self.output.line(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Report measurements as a table (rich on a terminal, aligned text otherwise)."""
        self.lines.extend(" | ".join(str(c) for c in row) for row in rows)
        self.output.table(headers, rows)

    def progress(self, total: int, description: str) -> Callable[[int], None]:
        """A progress bar for a long step; call the result with how many items were done."""
        if self.output.console is None:
            self.say(f"{description} ({total:,} items)")
            return lambda n: None
        from rich.progress import Progress

        bar = Progress(console=self.output.console, transient=True)
        task = bar.add_task(f"    {description}", total=total)
        bar.start()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.advance(task, n)
            if done[0] >= total:
                bar.stop()

        return advance


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    order: int
    run: Callable[[DemoContext], bool]


_SECTIONS: dict[str, Section] = {}


def section(
    name: str, title: str, order: int
) -> Callable[[Callable[[DemoContext], bool]], Callable[[DemoContext], bool]]:
    """Register a demo section; ``order`` sets its place in the tour."""

    def register(func: Callable[[DemoContext], bool]) -> Callable[[DemoContext], bool]:
        _SECTIONS[name] = Section(name, title, order, func)
        return func

    return register


def _discover() -> list[Section]:
    from . import demos

    for module in pkgutil.iter_modules(demos.__path__):
        importlib.import_module(f"{demos.__name__}.{module.name}")
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))


def run_demo(*, url: str | None, only: Sequence[str] = (), list_only: bool = False) -> int:
    sections = _discover()
    if list_only:
        for sec in sections:
            print(f"{sec.name:16} {sec.title}")
        return 0
    unknown = set(only) - {s.name for s in sections}
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}")
        return 2
    chosen = [s for s in sections if not only or s.name in only]
    server: EmbeddedServer | None = None
    if url is None:
        server = EmbeddedServer().start()
        url = server.url
        print(f"Started an embedded {server.binary.name} at {url}\n", flush=True)
    failed: list[str] = []
    output = _Output()
    # Sections provoke failures on purpose (a killed flusher, a dropped link); the library logs
    # them, and the tour shows those lines in place, indented, rather than raw on stderr.
    library_log = logging.getLogger("redis_patterns")
    handler = _SectionLogHandler(output)
    library_log.addHandler(handler)
    try:
        for number, sec in enumerate(chosen, 1):
            output.heading(f"[{number}/{len(chosen)}] {sec.title}")
            prefix = f"demo:{int(time.time() * 1000)}:{sec.name}"
            ctx = DemoContext(url=url, prefix=prefix, output=output)
            started = time.perf_counter()
            try:
                ok = sec.run(ctx)
            except Exception:
                traceback.print_exc()
                ok = False
            elapsed = time.perf_counter() - started
            output.verdict(ok, elapsed)
            if not ok:
                failed.append(sec.name)
    finally:
        library_log.removeHandler(handler)
        if server is not None:
            server.stop()
            server.cleanup()
    if failed:
        print(f"{len(failed)} section(s) misbehaved: {', '.join(failed)}")
        return 1
    print(f"All {len(chosen)} section(s) behaved as promised.")
    return 0
