"""One global session cap shared by several worker processes.

Each session holds an exclusive ``flock`` on one of ``size`` slot files in a directory the
workers share. The kernel releases a dead worker's locks, so a crash can never leak a slot,
and no coordinator process is needed.
"""

from __future__ import annotations

import fcntl
import os
import random
from pathlib import Path


class SlotPool:
    """``size`` session slots in ``directory``, taken with non-blocking exclusive locks."""

    def __init__(self, directory: Path, size: int):
        self.directory = directory
        self.size = size
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, index: int) -> Path:
        return self.directory / f"slot-{index}.lock"

    def acquire(self) -> int | None:
        """An open, locked slot file descriptor, or None when every slot is taken."""
        order = list(range(self.size))
        random.shuffle(order)  # workers rarely contend for the same file
        for index in order:
            fd = os.open(self._path(index), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the descriptor drops the lock

    def full(self) -> bool:
        fd = self.acquire()
        if fd is None:
            return True
        self.release(fd)
        return False
