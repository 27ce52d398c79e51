"""Imported by the forkserver at its start (``set_forkserver_preload``): it dies with the daemon that started it.

Only in a direct child of the daemon (the forkserver), whose parent is the pid
in ``VPP_DAEMON_OWNER``; importing this anywhere else does nothing.
"""

import os

from vpp.daemon.orphans import MARK, die_with_parent

if os.environ.get(MARK, "").rpartition(":")[2] == str(os.getppid()):
    die_with_parent()
