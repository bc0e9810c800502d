"""Django's own ``BaseCacheTests`` pass against `RedisPatternsCache`: Valkey, Redis 7, cluster.

Django's test code is not in this repository: ``_django_sdist`` takes it from the sdist of the
installed Django (see there). The skips expected here are listed with their reasons in
docs/django.md.
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

SUITE = Path(__file__).with_name("django_cache_suite.py")
# The skips Django's tests make on our backend, by design (docs/django.md says why).
EXPECTED_SKIPS = {
    "test_cull": "Culling isn't implemented.",
    "test_zero_cull": "Culling isn't implemented.",
    "test_cull_delete_when_store_empty": "Culling isn't implemented.",
}


@pytest.mark.slow
def test_django_base_cache_tests_pass(backend: Backend) -> None:
    tests = django_tests_dir("cache")
    done = subprocess.run(
        [sys.executable, str(SUITE), str(tests), url_of(backend)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    outcome = json.loads(lines[-1])
    failed = outcome["failures"] + outcome["errors"]
    assert not failed, "\n\n".join(f"{name}:\n{text}" for name, text in failed)
    assert dict(outcome["skipped"]) == EXPECTED_SKIPS
    assert outcome["run"] == outcome["defined"] > 50  # the whole mixin ran, not a part of it
    print(
        f"Django {outcome['django']} BaseCacheTests on {backend.kind}: {outcome['run']} run, "
        f"{outcome['run'] - len(outcome['skipped'])} passed, {len(outcome['skipped'])} skipped"
    )
    assert done.returncode == 0
