"""``python -m regions.simulator``: run one simulated region."""

import sys

from regions.simulator.cli import main

sys.exit(main())
