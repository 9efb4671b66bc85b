# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing files on the host so that a reader (systemd, an auditor, a crash) never sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile


def read_text(path):
    """The UTF-8 text of PATH, or None when it does not exist (other errors are raised)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def make_directories(path, mode):
    """Create PATH and its missing parents, each with MODE exactly (os.makedirs would apply the umask)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another run created it meanwhile
            os.mkdir(directory, mode)
            os.chmod(directory, mode)


def atomic_write(path, data, mode, directory_mode=0o755):
    """Replace PATH with the bytes DATA in one rename, after they reached the disk.

    Missing directories are created with DIRECTORY_MODE. The temporary file's name starts with a
    dot and has no suffix, so nothing that globs for *.conf or *.json picks up one a crash left.
    """
    directory = os.path.dirname(path)
    make_directories(directory, directory_mode)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".opdbus-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
