"""`python -m pixsearch.train synth|train|eval|demo ...`: the same commands as `pixsearch ...`."""

from __future__ import annotations

import sys

from pixsearch.train.cli import main

sys.exit(main())
