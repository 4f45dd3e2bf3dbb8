"""`python -m bench.label_efficiency`: the label-efficiency benchmark (see `cli.py`).

The code lives in `cli.py`, not here: a spawned worker process does not import a package's
`__main__` module, so the jobs it runs must be defined in a module it can import.
"""

import sys

from .cli import main

sys.exit(main())
