"""The integrations' commit plan without a server: which store calls end a request, and what a
request does when the session it loaded ended during it (issue 13, item 2)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from redis_patterns._core.sessions import KEEP, Session, SessionCore, new_session_id
from redis_patterns._plan import Plan
from redis_patterns.integrations._sessions_common import Outcome, RequestSession


@dataclass(frozen=True, slots=True)
class StoreCall:
    """One store operation the commit plan composed (recorded by `Recording`)."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class Recording(SessionCore):
    """A core whose store operations yield a `StoreCall` and return the canned reply."""

    def destroy(self, sid: object) -> Plan[bool]:
        destroyed: bool = yield StoreCall("destroy", (sid,), {})  # type: ignore[misc]
        return destroyed

    def create(
        self, data: object, user_id: object, idle_ttl: object = None, expires_in: object = None
    ) -> Plan[Session]:
        created: Session = yield StoreCall("create", (data,), {"user_id": user_id})  # type: ignore[misc]
        return created

    def write(
        self,
        sid: object,
        mapping: object,
        delete: object,
        idle_ttl: object = KEEP,
        expires_in: object = KEEP,
    ) -> Plan[bool]:
        exists: bool = yield StoreCall("update", (sid, mapping), {"delete": delete})  # type: ignore[misc]
        return exists

    def rotate(self, sid: object, user_id: object) -> Plan[str | None]:
        new_sid: str | None = yield StoreCall("rotate", (sid,), {"user_id": user_id})  # type: ignore[misc]
        return new_sid


CORE = Recording("session", 60, None, "json")


def loaded(user: str | None = "mallory", **data: Any) -> Session:
    return Session(
        id=new_session_id(user),
        user_id=user,
        created_at=1.0,
        idle_expires_at=61.0,
        absolute_expires_at=None,
        ttl=60.0,
        data=MappingProxyType(data),
    )


def made(sid: str | None = None) -> Session:
    return Session(
        id=sid or new_session_id(None),
        user_id=None,
        created_at=2.0,
        idle_expires_at=62.0,
        absolute_expires_at=None,
        ttl=60.0,
        data=MappingProxyType({}),
    )


def drive(session: RequestSession, replies: list[Any]) -> tuple[list[StoreCall], Outcome]:
    """Run the commit plan, answering each store call with the next canned reply."""
    changes = session._commit_changes(had_cookie=session._loaded is not None)
    if changes is None:  # what the integrations do: nothing to commit
        return [], Outcome(None, 0, touch_cookie=False)
    plan = CORE.commit(changes)
    calls: list[StoreCall] = []
    try:
        call = next(plan)
        while True:
            assert isinstance(call, StoreCall)
            calls.append(call)
            call = plan.send(replies[len(calls) - 1])
    except StopIteration as stop:
        return calls, stop.value


def request_session(start: Session | None) -> RequestSession:
    return RequestSession(start, orjson.dumps)


@pytest.mark.parametrize("rotate", [None, KEEP, "mallory", "someone"])
def test_a_write_to_a_session_that_ended_meanwhile_is_dropped(
    rotate: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to be written into a new session holding every loaded field, anonymous and
    outside the user's index, where no later destroy_user could reach it."""
    start = loaded(name="mallory")
    session = request_session(start)
    session["cart"] = ["sku-1"]
    if rotate is not None:
        session.rotate(user_id=rotate)
    with caplog.at_level(logging.INFO, "redis_patterns.sessions"):
        calls, outcome = drive(session, [False])
    assert [c.method for c in calls] == ["update"]
    assert calls[0].args == (start.id, {"cart": ["sku-1"]})
    assert outcome == Outcome(None, 0, touch_cookie=False)  # the cookie is left alone
    assert "not written: fields set ['cart']" in caplog.text
    assert start.id not in caplog.text  # the id is a credential: only its bucket is logged


@pytest.mark.parametrize("rotate", [KEEP, "mallory", None])
def test_a_rotation_of_a_session_that_ended_meanwhile_creates_nothing(rotate: Any) -> None:
    start = loaded(name="mallory")
    session = request_session(start)
    session.rotate(user_id=rotate)
    calls, outcome = drive(session, [None])
    assert [c.method for c in calls] == ["rotate"]
    assert outcome == Outcome(None, 0, touch_cookie=False)


def test_an_update_that_landed_before_the_session_ended_is_not_redone() -> None:
    start = loaded(name="mallory")
    session = request_session(start)
    session["cart"] = []
    session.rotate()
    calls, outcome = drive(session, [True, None])
    assert [c.method for c in calls] == ["update", "rotate"]
    assert not outcome.touch_cookie


def test_a_live_session_is_written_and_rotated() -> None:
    start = loaded(name="mallory")
    session = request_session(start)
    session["cart"] = []
    session.rotate()
    fresh = new_session_id("mallory")
    calls, outcome = drive(session, [True, fresh])
    assert [c.method for c in calls] == ["update", "rotate"]
    assert outcome == Outcome(fresh, 60, touch_cookie=True)


def test_a_request_that_started_without_a_session_still_creates_one() -> None:
    session = request_session(None)
    session["cart"] = ["sku-1"]
    created = made()
    calls, outcome = drive(session, [created])
    assert calls == [StoreCall("create", ({"cart": ["sku-1"]},), {"user_id": None})]
    assert outcome == Outcome(created.id, 60, touch_cookie=True)


def test_fields_set_after_clear_go_into_a_new_session_without_the_old_ones() -> None:
    start = loaded(name="mallory", role="admin")
    created = made()
    # the destroy may find the session already gone (logged out elsewhere): same outcome
    for destroyed in (True, False):
        session = request_session(start)
        session.clear()
        session["greeting"] = "hello"
        session.rotate(user_id="alice")
        calls, outcome = drive(session, [destroyed, created])
        assert [c.method for c in calls] == ["destroy", "create"]
        assert calls[1] == StoreCall("create", ({"greeting": "hello"},), {"user_id": "alice"})
        assert outcome == Outcome(created.id, 60, touch_cookie=True)


def test_an_unchanged_session_is_only_a_refresh() -> None:
    start = loaded(cart=[1])
    calls, outcome = drive(request_session(start), [])
    assert calls == []
    assert outcome == Outcome(start.id, 60, touch_cookie=True, refresh_only=True)
    session = request_session(start)
    session["cart"].append(2)
    _, outcome = drive(session, [True])
    assert outcome.refresh_only is False  # written: Flask's rule sends the cookie again
    session = request_session(start)
    session.rotate()
    _, outcome = drive(session, ["new-id"])
    assert outcome == Outcome("new-id", 60, touch_cookie=True)


def test_a_degraded_session_writes_nothing_and_leaves_the_cookie() -> None:
    session = RequestSession(None, orjson.dumps, degraded=True)
    session["cart"] = [1]
    session.rotate(user_id="alice")
    calls, outcome = drive(session, [])
    assert calls == []
    assert outcome.touch_cookie is False
