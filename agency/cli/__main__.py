"""``python -m agency.cli``: the ``agency`` command."""

from agency.cli import main

main()
