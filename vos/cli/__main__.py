"""`python -m vos.cli ARGS` runs `vos ARGS`."""

import sys

from vos.cli import main

if __name__ == "__main__":
    sys.exit(main())
