"""`python -m winback` runs the command line."""

import sys

from winback.cli import main

sys.exit(main())
