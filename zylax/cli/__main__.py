"""``python -m zylax.cli``: the ``zylax`` command."""

import sys

from zylax.cli import main

main(sys.argv[1:])
