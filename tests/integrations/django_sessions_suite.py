"""Run Django's own ``SessionTestsMixin`` (and ``SessionMiddlewareTests``) on our session engine.

Usage: ``python django_sessions_suite.py DJANGO_TESTS_DIR URL NAMESPACE``: ``DJANGO_TESTS_DIR``
holds Django's ``tests/sessions_tests`` package (from the sdist of the installed Django), ``URL``
the server (``redis://`` or ``redis+cluster://``). Prints the outcome as one JSON line on stdout;
the tests' own output goes to stderr. Run by ``test_django_sessions_suite.py``, one process per
server (Django's settings are per process).
"""

from __future__ import annotations

import json
import sys
import unittest
from typing import Any

ENGINE = "redis_patterns.integrations.django.sessions"

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    URL, NAMESPACE = sys.argv[2], sys.argv[3]

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        SECRET_KEY="redis-patterns django sessions suite",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "sessions_tests",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SESSION_ENGINE=ENGINE,
        REDIS_PATTERNS_SESSIONS={"url": URL, "namespace": NAMESPACE},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from django.test import SimpleTestCase  # noqa: E402
from django.test.runner import DiscoverRunner  # noqa: E402
from sessions_tests.tests import (  # type: ignore[import-not-found]  # noqa: E402
    SessionMiddlewareTests,
    SessionTestsMixin,
)

from redis_patterns.integrations.django.sessions import SessionStore  # noqa: E402

# SessionMiddlewareTests check the middleware with whatever SESSION_ENGINE is set; one of them
# reads Django's database table directly, which our engine does not use.
NOT_OURS = {"test_empty_session_saved": "reads the session back from Django's database table"}


class RedisPatternsSessionTests(SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    """Django's common session tests, unchanged, on our engine."""

    backend = SessionStore


class RedisPatternsMiddlewareTests(SessionMiddlewareTests):  # type: ignore[misc]
    """Django's session middleware tests with our engine as SESSION_ENGINE."""


for _test, _reason in NOT_OURS.items():
    setattr(
        RedisPatternsMiddlewareTests,
        _test,
        unittest.skip(_reason)(getattr(SessionMiddlewareTests, _test)),
    )


def _name(test: Any) -> str:
    return str(test.id()).rsplit(".", 1)[-1]


def _run(case: type[unittest.TestCase], defined: int) -> dict[str, Any]:
    suite = unittest.TestLoader().loadTestsFromTestCase(case)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    return {
        "run": result.testsRun,
        "defined": defined,
        "failures": [[_name(t), text] for t, text in result.failures],
        "errors": [[_name(t), text] for t, text in result.errors],
        "skipped": [[_name(t), reason] for t, reason in result.skipped],
    }


def main() -> int:
    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    databases = runner.setup_databases()
    try:
        outcome = {
            "mixin": _run(
                RedisPatternsSessionTests,
                len([n for n in dir(SessionTestsMixin) if n.startswith("test_")]),
            ),
            "middleware": _run(
                RedisPatternsMiddlewareTests,
                len([n for n in dir(SessionMiddlewareTests) if n.startswith("test_")]),
            ),
            "django": django.get_version(),
        }
    finally:
        runner.teardown_databases(databases)
        runner.teardown_test_environment()
    print(json.dumps(outcome))
    failed = any(
        part["failures"] or part["errors"] for part in outcome.values() if isinstance(part, dict)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
