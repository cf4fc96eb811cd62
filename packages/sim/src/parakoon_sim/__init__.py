"""parakoon_sim: a deterministic simulator that runs many real Paxos cores in one thread.

See :mod:`parakoon_sim.sim` for the model and the checkers, ``python -m parakoon_sim --help``
for the command line, and :mod:`parakoon_sim.broken` for the deliberately broken cores used to
show that the checkers catch real bugs.
"""

from .broken import VARIANTS
from .sim import Faults, Result, Sim, Violation, run_seed

__all__ = ["VARIANTS", "Faults", "Result", "Sim", "Violation", "run_seed"]
