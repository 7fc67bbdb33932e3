"""A real small disk for tests of a full or read-only disk: a tmpfs mounted for the test.

Needs pytest (it skips where mounting is not allowed: not root, or no tmpfs in a container).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(mount: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes at ``mount`` (created) for the block; needs root."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the real disk-full path is not exercised")
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
