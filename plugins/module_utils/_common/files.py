# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing files on the host so that a reader (systemd, an auditor, a crash) never sees half of one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import tempfile
import time


XDG_DEFAULTS = {"XDG_CONFIG_HOME": ".config", "XDG_STATE_HOME": os.path.join(".local", "state")}


def xdg_home(variable):
    """The user's XDG base directory VARIABLE (XDG_CONFIG_HOME or XDG_STATE_HOME).

    The fallback is under the home directory of the user this runs as, not $HOME: become methods
    such as su keep the caller's $HOME, and the user's own directory is meant.
    """
    return os.environ.get(variable) or os.path.join(pwd.getpwuid(os.getuid()).pw_dir, XDG_DEFAULTS[variable])


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
    The directory is synced after the rename, so a power failure cannot bring back the old file
    once this returned. OSErrors are raised as they are; callers say which file it was for.
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
    fsync_directory(directory)


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flock_within(fd, exclusive, timeout, max_delay=0.002):
    """Take a flock on FD within TIMEOUT seconds; returns False when it could not be had in time.

    flock has no timeout of its own, so this polls, with sleeps up to MAX_DELAY: the ledger's
    appends hold their lock for about a millisecond, and longer sleeps would leave it idle while
    writers queue.
    """
    operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, operation)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
