"""A real process death: a child appends with fsync and is killed with SIGKILL mid-stream.

The fault points cover exact places; this test shows the same guarantee holds when the kernel
ends the process wherever it happens to be: every append the child reported as returned is
there after reopening, with the right bytes, and the directory lock died with the child.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from parakoon_wal import Wal

CHILD = r"""
import sys
from parakoon_wal import Wal

def value(slot):
    return (b"%d:" % slot) * (slot % 13 + 1)

wal = Wal.open(sys.argv[1], segment_entries_max=50)
slot = 0
while True:
    n = slot % 5 + 1
    wal.append([(s, value(s)) for s in range(slot, slot + n)])
    slot += n
    print(slot - 1, flush=True)
"""


def value(slot: int) -> bytes:
    return (b"%d:" % slot) * (slot % 13 + 1)


def test_sigkill_keeps_every_acknowledged_append(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    for run in range(3):
        directory = tmp_path / f"run{run}"
        kill_after = rng.randint(1, 150)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory)],
            stdout=subprocess.PIPE,
            text=True,
        )
        acknowledged = -1
        try:
            assert child.stdout is not None
            for _ in range(kill_after):  # bounded by the number of acknowledgements we wait for
                line = child.stdout.readline()
                if not line:
                    break
                acknowledged = int(line)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            if child.stdout is not None:
                child.stdout.close()
        print(f"run {run}: killed after slot {acknowledged} was acknowledged")
        assert acknowledged >= 0
        with Wal.open(directory) as wal:
            last = wal.last_slot
            assert last is not None and last >= acknowledged
            assert list(wal.iter_from(0)) == [(s, value(s)) for s in range(last + 1)]
