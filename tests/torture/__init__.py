"""Crash torture: mixed load on a real gateway while it and its workers are killed with SIGKILL.

``python -m tests.torture --cycles N`` (see ``--help``) runs it; ``test_torture.py`` runs a
bounded quick mode under pytest. :mod:`.driver` runs the cycles, :mod:`.load` holds the load
processes, :mod:`.tasks` the task the workers run, :mod:`.checker` what is checked after each
cycle. docs/reliability.md ("Crash torture") describes it and records a long run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The black-box harness (gateway_harness, replication_harness, wire) lives in tests/ as
# top-level modules, as the other tests import it.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
