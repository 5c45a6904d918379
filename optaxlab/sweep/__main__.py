"""python -m optaxlab.sweep SWEEP.py --workdir DIR [...]: see optaxlab.sweep.driver."""

import sys

from optaxlab.sweep.driver import main

if __name__ == "__main__":
    sys.exit(main())
