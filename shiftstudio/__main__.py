"""``python -m shiftstudio`` is the same as the ``shiftstudio`` command."""

import sys

from shiftstudio.cli import main

if __name__ == "__main__":
    sys.exit(main())
