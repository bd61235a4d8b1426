"""`python -m pixsearch ...`: the same commands as `pixsearch ...` (for a checkout without the console script)."""

from __future__ import annotations

import sys

from pixsearch.cli import main

sys.exit(main())
