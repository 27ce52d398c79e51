"""Worker processes die with the daemon, and a daemon sweeps up what a killed one left.

The solver worker runs in a ``ProcessPoolExecutor`` on the forkserver start
method, which adds a forkserver and multiprocessing's resource tracker: three
processes (~270 MB) that outlived every ``kill -9`` of the daemon where no
supervisor cleans the cgroup. So:

- every process the daemon starts inherits ``VPP_DAEMON_OWNER=<config key>:<daemon pid>``;
- the forkserver (``vpp.daemon.forkserver_init``, preloaded) and each worker (its
  initializer) ask Linux to SIGKILL them when their parent dies
  (``prctl(PR_SET_PDEATHSIG)``); the resource tracker exits by itself once every
  process holding its pipe is gone;
- at start-up the daemon kills every process marked with its own config key whose
  daemon is no longer alive (``sweep``): orphans of a daemon killed before these
  processes could arm themselves, or of a version without this.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

MARK = "VPP_DAEMON_OWNER"
PR_SET_PDEATHSIG = 1


def config_key(config_path: Path) -> str:
    return hashlib.sha256(str(Path(config_path).resolve()).encode()).hexdigest()[:16]


def mark_children(config_path: Path) -> None:
    """Mark the processes this one starts from now on as the daemon's (they inherit the environment)."""
    os.environ[MARK] = f"{config_key(config_path)}:{os.getpid()}"


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux; elsewhere a no-op). If the parent is already gone
    (it died before we got here), exit now."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def sweep(config_path: Path) -> int:
    """Kill the processes a dead daemon of this config left; returns how many."""
    key = config_key(config_path)
    killed = 0
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            owner = process.environ().get(MARK, "")
        except (psutil.Error, OSError):
            continue
        mark_key, _, owner_pid = owner.partition(":")
        if mark_key != key or not owner_pid.isdigit() or int(owner_pid) == os.getpid() or psutil.pid_exists(int(owner_pid)):
            continue
        try:
            name = " ".join(process.cmdline())[:120]
            process.kill()
            killed += 1
            log.warning("killed pid=%d left by daemon pid=%s: %s", process.pid, owner_pid, name)
        except psutil.Error:
            continue
    return killed
