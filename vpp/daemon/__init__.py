"""The dispatcher daemon (``vpp run``): adapters → control tick → devices, re-optimization, API, storage.

Submodules are imported where they are used; importing this package is cheap
(``vpp.config`` imports ``vpp.daemon.config`` for the ``daemon:`` block).
"""
