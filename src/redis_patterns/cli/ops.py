"""``redis-patterns queue | locks | limits``: look at queues, held locks and limiter state."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import redis

from .._errors import ConfigurationError, RedisPatternsError
from .._sync.streams import StreamQueue
from . import _admin
from ._output import confirm, fmt_seconds, print_json, print_table

__all__ = ["add_parsers", "run"]


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], url: str | None
) -> None:
    """Add ``queue``, ``locks`` and ``limits`` to the ``redis-patterns`` parser."""

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--url", default=url, help="the server (default: $REDIS_URL)")
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    queue = commands.add_parser("queue", help="stream queues: list, inspect, replay, purge")
    verbs = queue.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = common(verbs.add_parser("list", help="every queue, per consumer group"))
    listing.add_argument("pattern", nargs="?", default="*", help="queue names ('*' wildcards)")
    for verb, text in (
        ("info", "length, lag, pending and consumers of one queue"),
        ("pending", "entries delivered but not acknowledged, with idle times"),
        ("dead", "dead letters with their errors"),
    ):
        sub = common(verbs.add_parser(verb, help=text))
        sub.add_argument("name", help="the queue's name")
        sub.add_argument("--group", help="the consumer group (default: the only one, or workers)")
        if verb != "info":
            sub.add_argument("--count", type=int, default=100, help="the most to list")
    for verb, text in (
        ("replay", "put dead letters back onto the stream (all, or the ids given)"),
        ("purge", "delete dead letters for good (all, or the ids given)"),
    ):
        sub = common(verbs.add_parser(verb, help=text))
        sub.add_argument("name", help="the queue's name")
        sub.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids (default: all)")
        sub.add_argument("--group", default="workers", help="the consumer group (default workers)")
        sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    locks = common(commands.add_parser("locks", help="held locks: ttl and fence (never tokens)"))
    locks.add_argument("pattern", nargs="?", default="*", help="lock names ('*' wildcards)")

    limits = common(
        commands.add_parser("limits", help="one limiter key's state, peeked without consuming")
    )
    limits.add_argument(
        "name", help="the limit's name (name= or the default, e.g. fw:100:60000000)"
    )
    limits.add_argument("key", help="the limited key (a user id, an IP...)")
    limits.add_argument(
        "--limiter",
        metavar="SPEC",
        help="for a custom name: e.g. fixed-window:100:60, token-bucket:100:2.5, gcra:100:60",
    )


def _queue(args: argparse.Namespace, client: _admin.Client) -> int:
    if args.verb == "list":
        rows = _admin.list_queues(client, args.pattern)
        if args.json:
            print_json({"queues": rows})
        else:
            print_table(
                "stream queues",
                ["queue", "group", "length", "lag", "pending", "consumers", "oldest pending",
                 "dead"],
                [(r.name, r.group, r.length, r.lag, r.pending, r.consumers,
                  fmt_seconds(r.oldest_pending_age), r.dead_letters) for r in rows],
            )  # fmt: skip
        return 0
    if args.verb in ("info", "pending", "dead"):
        count = getattr(args, "count", 1)
        snap = _admin.queue_snapshot(client, args.name, args.group, count=max(count, 1))
        if args.json:
            parts: dict[str, object] = {
                "info": snap.info,
                "pending": snap.pending,
                "dead": snap.dead,
            }
            field = "dead_letters" if args.verb == "dead" else args.verb
            print_json({"name": snap.name, "group": snap.group, "groups": snap.groups,
                        field: parts[args.verb]})  # fmt: skip
        elif args.verb == "info":
            _print_info(snap)
        elif args.verb == "pending":
            print_table(
                f"pending entries of {snap.name} (group {snap.group})",
                ["id", "consumer", "idle", "deliveries"],
                [(p.id, p.consumer, fmt_seconds(p.idle), p.deliveries) for p in snap.pending],
            )
        else:
            print_table(
                f"dead letters of {snap.name}",
                ["id", "original id", "deliveries", "replays", "consumer", "error", "data"],
                [(d.id, d.original_id, d.deliveries, d.replays, d.consumer, d.error, d.data)
                 for d in snap.dead],
            )  # fmt: skip
        return 0 if snap.info.length or snap.info.dead_letters or snap.groups else 1
    return _change(args, client)


def _print_info(snap: _admin.Snapshot) -> None:
    info = snap.info
    print_table(
        f"queue {snap.name}",
        ["property", "value"],
        [
            ("group", snap.group + ("" if info.group_exists else " (not created yet)")),
            ("other groups", ", ".join(g for g in snap.groups if g != snap.group) or None),
            ("length", info.length),
            ("lag", info.lag),
            ("pending", info.pending),
            ("oldest pending", fmt_seconds(info.oldest_pending_age)),
            ("dead letters", info.dead_letters),
            ("last delivered id", info.last_delivered_id),
        ],
    )
    print_table(
        "consumers",
        ["consumer", "pending", "idle"],
        [(c.name, c.pending, fmt_seconds(c.idle)) for c in info.consumers],
    )


def _change(args: argparse.Namespace, client: _admin.Client) -> int:
    queue = StreamQueue(client, args.name, args.group)
    ids = args.ids or None
    count = len(ids) if ids else queue.info().dead_letters
    if count == 0:
        result: dict[str, object] = {"name": args.name, "replayed": {}, "missing": []}
        if args.verb == "purge":
            result = {"name": args.name, "purged": 0}
        if args.json:
            print_json(result)
        else:
            print("no dead letters")
        return 0
    what = "Replay" if args.verb == "replay" else "Delete for good"
    chosen = f"{count} dead letter(s)" if ids else f"all {count} dead letter(s)"
    if not confirm(f"{what} {chosen} of queue {args.name!r}?", yes=args.yes):
        return 2
    if args.verb == "replay":
        replayed = queue.replay_dead_letters(ids)
        if args.json:
            print_json({"name": args.name, "replayed": replayed.replayed,
                        "missing": replayed.missing})  # fmt: skip
        else:
            for dead_id, new_id in replayed.replayed.items():
                print(f"replayed {dead_id} -> {new_id}")
            for missing in replayed.missing:
                print(f"not found: {missing}")
        return 0 if not replayed.missing else 1
    purged = queue.purge_dead_letters(ids)
    if args.json:
        print_json({"name": args.name, "purged": purged})
    else:
        print(f"purged {purged} dead letter(s)")
    return 0


def _locks(args: argparse.Namespace, client: _admin.Client) -> int:
    locks = _admin.held_locks(client, args.pattern)
    if args.json:
        print_json({"locks": locks})
    else:
        rows = [(lock.name, fmt_seconds(lock.ttl) if lock.ttl is not None else "no TTL!",
                 lock.fence) for lock in locks]  # fmt: skip
        print_table("held locks", ["lock", "ttl", "fence"], rows)
    return 0


def _limits(args: argparse.Namespace, client: _admin.Client) -> int:
    state = _admin.limit_state(client, args.name, args.key, args.limiter)
    if args.json:
        print_json(state)
        return 0 if state.exists else 1
    rows: list[tuple[str, object]] = [
        ("key", state.key),
        ("exists", "yes" if state.exists else "no (full allowance)"),
        ("type", state.type),
        ("ttl", fmt_seconds(state.ttl)),
        ("algorithm", state.algorithm),
        *((f"field {k}", v) for k, v in state.fields.items()),
    ]
    if state.decision is not None:
        rows += [(f"peek {k}", v) for k, v in state.decision.items()]
    else:
        rows.append(("peek", "unknown parameters: pass --limiter SPEC"))
    if state.others:
        rows.append(("other limits of this key", ", ".join(state.others)))
    print_table(f"limit {args.name} for {args.key}", ["property", "value"], rows)
    return 0 if state.exists else 1


_COMMANDS: dict[str, Callable[[argparse.Namespace, _admin.Client], int]] = {
    "queue": _queue,
    "locks": _locks,
    "limits": _limits,
}


def run(args: argparse.Namespace) -> int:
    """Run ``queue``, ``locks`` or ``limits``; exit status 0 ok, 1 not found, 2 error."""
    prog = f"redis-patterns {args.command}"
    if not args.url:
        print(f"{prog}: give --url (or set REDIS_URL)", file=sys.stderr)
        return 2
    try:
        client = _admin.open_client(args.url)
    except (redis.RedisError, ValueError) as exc:
        print(f"{prog}: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](args, client)
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except (RedisPatternsError, redis.RedisError) as exc:
        print(f"{prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
