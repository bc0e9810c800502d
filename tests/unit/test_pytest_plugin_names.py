"""The shipped pytest plugin's fixtures are all ``rp_``-prefixed: an application's test asking
for a fixture it never defined fails, instead of silently running against our servers."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def test_an_undefined_client_fixture_is_an_error_not_three_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_uses_its_own_client(client):
            assert client is not None
        """
    )
    result = pytester.runpytest("-p", "redis_patterns", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'client' not found*"])


def test_the_prefixed_fixtures_are_there(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        def test_names(rp_prefix, rp_scale):
            assert rp_prefix.startswith("t")
            assert rp_scale(1, 100) == 1
        """
    )
    result = pytester.runpytest("-p", "redis_patterns", "-q")
    result.assert_outcomes(passed=1)


def test_every_plugin_fixture_is_prefixed() -> None:
    from redis_patterns.testing import pytest_plugin

    fixtures = [
        name
        for name, value in vars(pytest_plugin).items()
        if hasattr(value, "_fixture_function_marker")
        or type(value).__name__ == "FixtureFunctionDefinition"
    ]
    assert fixtures, "no fixtures found: the check below would pass on nothing"
    assert [name for name in fixtures if not name.startswith("rp_")] == []
