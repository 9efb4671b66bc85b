# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error base of the collection.

Every failure a user can act on is an ``OpdbusError`` (a subclass per domain), so a module turns
all of them into ``fail_json`` with one ``except``. ``details`` are extra result fields that say
what the failed run did or found.
"""

from __future__ import annotations

import errno


class OpdbusError(Exception):
    """A failure with a message that says what to do; ``details`` go into the task result."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.details = details


class HostFileError(OpdbusError):
    """A file on the host could not be read or written (permissions, a full disk, a read-only mount)."""


def describe_os_error(error):
    """What to do about an OSError, in words (not an errno)."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; op-dbus files belong to root, so run as root (become: true)"
    if error.errno == errno.ENOSPC:
        return "the file system is full; free space and retry"
    if error.errno == errno.EROFS:
        return "the file system is mounted read-only"
    if error.errno == errno.EDQUOT:
        return "the disk quota is exhausted; free space and retry"
    return error.strerror or str(error)


def host_file_error(action, path, error):
    """A HostFileError for an OSError raised while doing ACTION ("write", "read", ...) on PATH."""
    return HostFileError(f"cannot {action} {path}: {describe_os_error(error)}")


class TaskFailed(OpdbusError):
    """A task that ran but did not reach its goal (units that did not converge, a ledger that does not
    verify); ``details`` hold its whole result, so the failed task still reports what it did."""
