"""``python -m redis_patterns.cli``."""

import sys

from . import main

sys.exit(main())
