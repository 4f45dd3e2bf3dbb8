"""`python -m bench.raters`: the raters benchmark (see `cli.py`)."""

import sys

from .cli import main

sys.exit(main())
