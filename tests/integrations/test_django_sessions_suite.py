"""Django's own ``SessionTestsMixin`` passes against our session engine: Valkey, Redis 7, cluster.

Django's test code comes from the sdist of the installed Django (see ``_django_sdist``); the
mixin runs unchanged in a subprocess (``django_sessions_suite.py``), with Django's
``SessionMiddlewareTests`` on our engine as well. The tests skipped are listed with their
reasons in docs/django.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _django_sdist import django_tests_dir, url_of

from redis_patterns.testing.pytest_plugin import Backend

pytest.importorskip("django")

SUITE = Path(__file__).with_name("django_sessions_suite.py")
# What Django's tests skip on our engine, by design (docs/django.md says why).
EXPECTED_SKIPS = {
    "mixin": {},
    "middleware": {
        "test_empty_session_saved": "reads the session back from Django's database table"
    },
}


@pytest.mark.slow
def test_django_session_tests_pass(backend: Backend, prefix: str) -> None:
    tests = django_tests_dir("sessions_tests")
    done = subprocess.run(
        [sys.executable, str(SUITE), str(tests), url_of(backend), prefix],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    outcome = json.loads(lines[-1])
    for part in ("mixin", "middleware"):
        result = outcome[part]
        failed = result["failures"] + result["errors"]
        assert not failed, "\n\n".join(f"{name}:\n{text}" for name, text in failed)
        assert dict(result["skipped"]) == EXPECTED_SKIPS[part]
        assert result["run"] == result["defined"]  # the whole class ran, not a part of it
        print(
            f"Django {outcome['django']} {part} on {backend.kind}: {result['run']} run,"
            f" {result['run'] - len(result['skipped'])} passed, {len(result['skipped'])} skipped"
        )
    assert outcome["mixin"]["run"] > 60
    assert done.returncode == 0
    assert "ResourceWarning" not in done.stderr
    # every session the tests made was deleted or expires by itself: none without a TTL
    for key in backend.scan(f"{{{prefix}:*"):
        with backend.client() as client:
            assert client.pttl(key) > 0, key
