"""`python -m vos.cli ARGS` runs `vos ARGS`."""

import sys

from vos.cli import main

sys.exit(main())
