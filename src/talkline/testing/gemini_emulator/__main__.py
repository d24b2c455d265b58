"""`python -m talkline.testing.gemini_emulator`."""

import sys

from .cli import main

sys.exit(main())
