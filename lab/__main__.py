"""``python -m lab``."""

import sys

from lab.shell.cli import main

sys.exit(main())
