"""`python -m talkline.emulator`."""

import sys

from .cli import main

sys.exit(main())
