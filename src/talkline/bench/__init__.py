"""``talkline bench``: load tests of talkline against a plain Pipecat bot; see bench/README.md."""

from talkline.bench.cli import main

__all__ = ["main"]
