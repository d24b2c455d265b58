import sys

from talkline.bench.cli import main

sys.exit(main(prog="python -m talkline.bench"))
