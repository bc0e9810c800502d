"""AsyncSessionStore: server-side sessions on one hash each, sliding and absolute expiry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .._core.replication import check_wait_replicas
from .._core.sessions import KEEP, Session, SessionChanges, SessionCore, SessionOutcome
from .._core.sessions_types import _Keep
from .._plan import Plan
from .._runner import AsyncClient, AsyncRunner, require_bytes_replies
from .._serializers import Serializer
from .._validate import Duration

__all__ = ["AsyncSessionStore"]

T = TypeVar("T")


class AsyncSessionStore:
    """Sessions stored one hash per session, read and refreshed in one round trip.

    Every session has an idle lifetime that each `get` slides forward, capped by an optional
    absolute lifetime counted from creation (OWASP's idle and absolute timeouts). Both are
    enforced by the server: the key's own TTL never outlives either, and the decision uses the
    server's clock (``TIME`` inside the script), so app servers with skewed clocks agree. A
    session may carry its own idle lifetime and a deadline of its own (``idle_ttl`` and
    ``expires_in`` of `create` and `update`, e.g. "remember me"); the store's absolute
    lifetime still caps both.

    Session ids are ``<bucket>.<43 chars of secrets.token_urlsafe(32)>`` (256 random bits). Any
    malformed id (wrong type, length or alphabet) is treated as an unknown session without a
    single command being sent: methods return ``None`` / ``False`` for it, they never raise.

    Args:
        client: a redis-py asyncio client (standalone or cluster).
        namespace: the hash-tag prefix of every key (``{<namespace>:<bucket>}:...``).
        idle_ttl: seconds a session lives without being read (> 0).
        absolute_ttl: seconds a session may live at most, whatever its activity; ``None`` for
            no limit. Must be >= ``idle_ttl``.
        serializer: ``"json"`` (default), ``"msgpack"``, ``"pickle"`` (only if you trust every
            writer of the server) or a `Serializer`. Values are serialized per field.
        wait_replicas: acknowledge a created or destroyed session only once this many replicas
            confirmed it (``WAIT``, pipelined with the script: still one round trip; at most
            1 s), else raise `NotReplicatedError`: a failover then cannot silently undo a login
            or a logout the caller was told about. Standalone and Sentinel clients only.

    Raises:
        ConfigurationError: a bad namespace, duration or serializer name, or a client made
            with ``decode_responses=True`` (before any I/O).
        TypeError: ``client`` is not an asyncio client.
    """

    def __init__(
        self,
        client: AsyncClient,
        namespace: str = "session",
        idle_ttl: Duration = 1800,
        absolute_ttl: Duration | None = None,
        serializer: str | Serializer = "json",
        *,
        wait_replicas: int = 0,
    ) -> None:
        self._runner = AsyncRunner(client)
        waits = check_wait_replicas(wait_replicas, cluster=self._runner.cluster)
        self._core = SessionCore(
            namespace, idle_ttl, absolute_ttl, serializer, waits, self._runner.features
        )
        # field names, metadata and serialized values are read back as bytes
        require_bytes_replies(self._runner, "the session store reads its fields as bytes")
        self._client = client

    @property
    def client(self) -> AsyncClient:
        """The redis-py client this store uses (the store does not own or close it)."""
        return self._client

    @property
    def idle_ttl(self) -> float:
        """The idle lifetime in seconds."""
        return self._core.idle_ms / 1000

    @property
    def absolute_ttl(self) -> float | None:
        """The absolute lifetime in seconds, or ``None``."""
        ms = self._core.absolute_ms
        return None if ms is None else ms / 1000

    @property
    def namespace(self) -> str:
        """The namespace every key of this store starts with."""
        return self._core.namespace

    async def create(
        self,
        data: Mapping[str, Any] | None = None,
        user_id: str | int | None = None,
        *,
        idle_ttl: Duration | None = None,
        expires_in: Duration | None = None,
    ) -> Session:
        """Create a session holding ``data``, optionally bound to ``user_id``. One round trip.

        Args:
            data: the initial fields (str names not starting with ``:``; serializable values).
            user_id: the owner (a str, or an int stored as str); indexed for `destroy_user`.
            idle_ttl: this session's own idle lifetime in seconds; ``None``: the store's.
            expires_in: end this session that many seconds from now whatever its activity;
                ``None``: no deadline of its own. The store's ``absolute_ttl`` caps both.

        Returns:
            The new `Session` (its ``id`` goes in the cookie).

        Raises:
            ConfigurationError: a bad field name, an unserializable value, a bad ``user_id``
                or duration (before any I/O).
        """
        return await self._runner.run(
            self._core.create(data, user_id, idle_ttl=idle_ttl, expires_in=expires_in)
        )

    async def get(self, sid: str) -> Session | None:
        """Read a session and slide its idle expiry, capped by its absolute expiry.

        One script (one ``EVALSHA``) reads every field, reads the server clock and sets the
        new TTL, so a session can never be read past either of its deadlines.

        Returns:
            The `Session`, or ``None`` when ``sid`` is malformed (no command sent), unknown,
            expired or destroyed.

        Raises:
            BackendError: a stored field cannot be decoded by the serializer (never unpickled
                unless you chose pickle).
        """
        return await self._runner.run(self._core.get(sid))

    async def update(
        self,
        sid: str,
        mapping: Mapping[str, Any],
        *,
        delete: Iterable[str] = (),
        idle_ttl: Duration | _Keep | None = KEEP,
        expires_in: Duration | _Keep | None = KEEP,
    ) -> bool:
        """Set the fields of ``mapping`` (and delete those in ``delete``) in one script.

        Only the given fields are written, so concurrent updates of different fields never
        undo each other. An update does not slide the expiry (`get` does), unless it changes it.

        Args:
            sid: the session id.
            mapping: the fields to set.
            delete: the fields to delete.
            idle_ttl: give the session its own idle lifetime (seconds), or ``None`` to go back
                to the store's; omitted leaves it.
            expires_in: give the session a deadline that many seconds from now, whatever its
                activity, or ``None`` to remove it; omitted leaves it. Changing either sets the
                session's TTL again from now (capped by the store's absolute lifetime).

        Returns:
            ``True`` when the session exists and was changed; ``False`` when it does not
            (nothing is written, the session is never resurrected) or ``sid`` is malformed.

        Raises:
            ConfigurationError: a bad field name, unserializable value or duration (before any
                I/O).
        """
        return await self._runner.run(
            self._core.write(sid, mapping, delete, idle_ttl=idle_ttl, expires_in=expires_in)
        )

    async def incr(self, sid: str, field: str, amount: int = 1) -> int | None:
        """Add ``amount`` to an integer field atomically (``HINCRBY``; missing counts as 0).

        Returns:
            The new value, or ``None`` when the session does not exist or ``sid`` is malformed.

        Raises:
            ConfigurationError: a bad field name or amount, or a serializer other than JSON.
            ScriptError: the field holds something other than an integer.
        """
        return await self._runner.run(self._core.incr(sid, field, amount))

    async def delete_fields(self, sid: str, *fields: str) -> bool:
        """Delete ``fields`` from the session.

        Returns:
            ``True`` when the session exists; ``False`` when it does not or ``sid`` is malformed.
        """
        return await self._runner.run(self._core.write(sid, {}, fields))

    async def rotate(self, sid: str, *, user_id: Any = KEEP) -> str | None:
        """Move the session to a new id (on login or privilege change); the old id dies at once.

        Fields, creation time and expiries (absolute, own idle, own deadline) are kept; the idle
        expiry restarts. Of several concurrent rotations of one id exactly one succeeds; the
        others return ``None``.

        Args:
            sid: the current id.
            user_id: the user to bind the new id to (at login), ``None`` to make it anonymous;
                omitted keeps the current user.

        Returns:
            The new id, or ``None`` when the session does not exist or ``sid`` is malformed.

        Raises:
            ConfigurationError: a bad ``user_id`` (before any I/O).

        Atomicity: when the user stays the same, one script does everything. When it changes,
        the session moves to another bucket (maybe another cluster node): it is taken out
        atomically (old id dead, exactly one winner), then written under the new id; a crash
        between the two leaves the user logged out, never with two live ids.
        """
        return await self._runner.run(self._core.rotate(sid, user_id))

    async def destroy(self, sid: str) -> bool:
        """Delete the session (the key is gone: ``EXISTS`` is 0) and its index entry.

        Returns:
            ``True`` when a session was deleted; ``False`` when there was none or ``sid`` is
            malformed.
        """
        return await self._runner.run(self._core.destroy(sid))

    async def destroy_user(self, user_id: str | int) -> int:
        """Delete every session of ``user_id`` ("log out everywhere").

        Each round is one script over the user's index: it deletes the sessions it was told
        about together with their index entries, and reports ids created since; rounds repeat
        (up to 8) until none are new. Every session that existed when the call started is gone
        when it returns; one created concurrently is deleted too, or, if it appeared during
        the last round, it stays indexed (a create is atomic with its index entry), never lost
        to a later `destroy_user`.

        Returns:
            How many sessions were deleted.

        Raises:
            ConfigurationError: a bad ``user_id`` (before any I/O).
        """
        return await self._runner.run(self._core.destroy_user(user_id))

    async def sessions_of(self, user_id: str | int) -> list[str]:
        """The ids of the user's live sessions (dead ids are dropped from the index meanwhile)."""
        return await self._runner.run(self._core.sessions_of(user_id))

    async def ttl(self, sid: str) -> float | None:
        """Seconds until the session expires unless used (does not slide it).

        Returns:
            The remaining seconds, or ``None`` when it does not exist or ``sid`` is malformed.
        """
        return await self._runner.run(self._core.ttl(sid))

    async def commit(self, changes: SessionChanges) -> SessionOutcome:
        """Persist what a web request did to its session (the framework integrations' end of
        request), in as few round trips as the changes need: none for an unchanged session.

        Only the changed and deleted fields are written; a destroy, then fields set afterwards,
        makes a brand-new session; a rotation follows the writes. When the loaded session ended
        during the request (destroyed, rotated elsewhere, expired), nothing more is written and
        the outcome leaves the cookie alone (logged at INFO, naming only the id's bucket).

        Returns:
            What the response does with the cookie.

        Raises:
            ConfigurationError: a bad field name, unserializable value or ``user_id``.
        """
        return await self._runner.run(self._core.commit(changes))

    async def _run(self, plan_of: Callable[[SessionCore], Plan[T]]) -> T:
        """Run a plan built on this store's core (the Django engine's own operations)."""
        return await self._runner.run(plan_of(self._core))
