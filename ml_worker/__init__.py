"""Celery tasks (``tasks.py``) and, under ``core/``, the ML core that imports no Django.

OpenMP's default is to spin-wait between parallel regions; on a machine whose cores other
processes also use (a web server and a worker side by side, CI), two torch threads then run
about 10x slower than one (measured: a tiny training step, 350 ms against 24 ms). Passive
waiting costs nothing measurable when the cores are free. It must be set before torch is
first imported; an explicit OMP_WAIT_POLICY in the environment wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
