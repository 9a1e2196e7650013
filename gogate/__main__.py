"""``python -m gogate``: see :mod:`gogate.cli`."""

import sys

from gogate.cli import main

sys.exit(main())
