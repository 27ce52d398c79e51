"""``python -m vpp`` is the ``vpp`` command."""

from vpp.cli import main

main()
