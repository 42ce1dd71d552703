"""``python -m derbridge``: the same as the ``derbridge`` command."""

from derbridge.cli import main

main()
