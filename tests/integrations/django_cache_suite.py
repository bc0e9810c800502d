"""Run Django's own ``BaseCacheTests`` (from Django's sdist) against `RedisPatternsCache`.

Usage: ``python django_cache_suite.py DJANGO_TESTS_DIR LOCATION`` (``DJANGO_TESTS_DIR`` holds
Django's ``tests/cache`` package, from the sdist of the installed Django). Prints the outcome
as one JSON line on stdout; the tests' own output goes to stderr. Run by
``test_django_cache_suite.py``, one process per server (Django's settings are per process).
"""

from __future__ import annotations

import json
import os
import sys
import unittest
from typing import Any

BACKEND = "redis_patterns.integrations.django.cache.RedisPatternsCache"

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    os.environ["RP_DJANGO_LOCATION"] = sys.argv[2]

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        SECRET_KEY="redis-patterns django cache suite",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "cache"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": {"BACKEND": BACKEND, "LOCATION": os.environ["RP_DJANGO_LOCATION"]}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()

from cache.tests import BaseCacheTests, caches_setting_for_tests  # type: ignore[import-not-found]  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402
from django.test.runner import DiscoverRunner  # noqa: E402

# Culling (MAX_ENTRIES, CULL_FREQUENCY) is excluded as for Django's own Redis backend: Redis
# evicts by its maxmemory policy; the three cull tests then skip themselves.
EXCLUDED = {"cull", "zero_cull"}


@override_settings(
    CACHES=caches_setting_for_tests(
        base={"BACKEND": BACKEND, "LOCATION": os.environ["RP_DJANGO_LOCATION"]},
        exclude=EXCLUDED,
    )
)
class RedisPatternsCacheTests(BaseCacheTests, TestCase):  # type: ignore[misc]
    """Django's common cache tests, unchanged, on our backend."""


def main() -> int:
    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    databases = runner.setup_databases()
    try:
        suite = unittest.TestLoader().loadTestsFromTestCase(RedisPatternsCacheTests)
        result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    finally:
        runner.teardown_databases(databases)
        runner.teardown_test_environment()

    def name(test: Any) -> str:
        return str(test.id()).rsplit(".", 1)[-1]

    outcome = {
        "run": result.testsRun,
        "defined": len([n for n in dir(BaseCacheTests) if n.startswith("test_")]),
        "failures": [[name(t), text] for t, text in result.failures],
        "errors": [[name(t), text] for t, text in result.errors],
        "skipped": [[name(t), reason] for t, reason in result.skipped],
        "django": django.get_version(),
    }
    print(json.dumps(outcome))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    raise SystemExit(main())
