"""Suite-wide settings: Hypothesis runs the same examples on every run unless asked to explore."""

from __future__ import annotations

import os

from hypothesis import settings

# CI must not fail on an example a random seed happened to find today and not tomorrow:
# the default profile is derandomized (same examples every run), keeps no example database,
# and has no per-example deadline (examples that talk to a server on a loaded 2-core machine
# vary in time). `HYPOTHESIS_PROFILE=explore` searches with fresh random seeds.
settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
