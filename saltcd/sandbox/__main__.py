"""`python -m saltcd.sandbox up|down|demo` (see saltcd.sandbox.cli)."""

import sys

from saltcd.sandbox.cli import main

sys.exit(main())
