"""`python -m socbench`: see `cli`."""

import sys

from .cli import main

sys.exit(main())
