"""Django's own test packages (``tests/<package>`` of its sdist) for the installed Django, and
the URL a Django setting gives for a test server (`url_of`).

Django's test code is not in this repository: the sdist of the installed version (which ships
``tests/``) is downloaded once with pip into ``$REDIS_PATTERNS_DJANGO_SDIST_DIR`` (default
``~/.cache/redis-patterns/django-sdist``) and the packages asked for are extracted beside it.
When pip cannot fetch it the calling test is skipped, or fails under
``REDIS_PATTERNS_REQUIRE_DJANGO_SUITE=1`` (set by ``.ci/run``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from redis_patterns.testing.pytest_plugin import Backend

REQUIRE = "REDIS_PATTERNS_REQUIRE_DJANGO_SUITE"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}, but {REQUIRE}=1 requires Django's test suite", pytrace=False)
    pytest.skip(reason)


def django_tests_dir(package: str) -> Path:
    """A directory holding Django's ``tests/<package>`` as an importable package."""
    import django

    version = django.get_version()
    root = Path(
        os.environ.get("REDIS_PATTERNS_DJANGO_SDIST_DIR")
        or Path.home() / ".cache" / "redis-patterns" / "django-sdist"
    )
    tests = root / f"django-{version}-{package}"
    if (tests / package / "tests.py").exists():
        return tests
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"django-{version}.tar.gz"
    if not sdist.exists():
        fetched = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"),
                *("--quiet", f"django=={version}", "-d", str(root)),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if fetched.returncode != 0 or not sdist.exists():
            _unavailable(f"cannot download Django {version}'s sdist: {fetched.stderr[-500:]}")
    prefix = f"django-{version}/tests/{package}/"
    partial = tests.with_name(tests.name + f".partial-{os.getpid()}")
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.name.startswith(prefix) and member.isfile():
                member.name = f"{package}/" + member.name[len(prefix) :]
                archive.extract(member, partial, filter="data")
    try:
        partial.rename(tests)  # atomic: a concurrent run sees all of it or none
    except OSError:  # another run got there first
        if not (tests / package / "tests.py").exists():
            raise
    return tests


def url_of(backend: Backend) -> str:
    """The Django-setting URL of ``backend``: ``redis://`` or ``redis+cluster://h:p,h:p``."""
    if backend.is_cluster:
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in backend.nodes)
    host, port = backend.nodes[0]
    return f"redis://{host}:{port}/0"
