"""The global session cap shared by worker processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from talkline.slots import SlotPool


def test_slots_are_exclusive_and_released(tmp_path: Path) -> None:
    pool = SlotPool(tmp_path, 2)
    first, second = pool.acquire(), pool.acquire()
    assert first is not None and second is not None
    assert pool.acquire() is None and pool.full()
    pool.release(first)
    assert not pool.full()


def test_a_dead_process_leaks_no_slot(tmp_path: Path) -> None:
    """A worker killed outright gives its slot back: the kernel drops its lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from talkline.slots import SlotPool;"
         f"assert SlotPool(Path({str(tmp_path)!r}), 1).acquire() is not None;"
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    pool = SlotPool(tmp_path, 1)
    assert pool.full()
    holder.kill()
    holder.wait()
    holder.stdout.close()
    assert not pool.full()
