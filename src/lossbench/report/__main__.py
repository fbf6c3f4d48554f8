"""``python -m lossbench.report``, as ``lossbench-report``."""

import sys

from lossbench.report import main

sys.exit(main())
