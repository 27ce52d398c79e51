"""Running the real ``vpp`` console script, as a user's shell does (not ``python -m vpp``, not in-process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VPP = str(Path(sys.executable).with_name("vpp"))  # the entry point pip installed next to this interpreter
ROOT = Path(__file__).resolve().parents[1]


def vpp(*args: str, cwd: Path | str | None = None, timeout: float = 300, env: dict[str, str] | None = None, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """``vpp ARGS`` in a subprocess (``input_text`` on its stdin); stdout and stderr captured as text, never
    raising on a non-zero exit."""
    return subprocess.run([VPP, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env={**os.environ, **(env or {})}, check=False, input=input_text)
