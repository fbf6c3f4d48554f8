"""``python -m lossbench.claims``, as ``lossbench-claims``."""

import sys

from lossbench.claims import main

sys.exit(main())
