"""``python -m lab``."""

import sys

from lab.core import settings

settings.share_cpu()  # before torch is imported

from lab.shell.cli import main  # noqa: E402

sys.exit(main())
