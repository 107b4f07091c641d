"""``python -m scheduler.cli``: the same as the ``wattmux`` command."""

import sys

from scheduler.cli.main import main

sys.exit(main())
