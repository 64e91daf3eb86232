"""`python -m sandbox up|down|demo` (see sandbox.cli)."""

import sys

from sandbox.cli import main

sys.exit(main())
