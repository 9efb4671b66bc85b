# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""BtrfsClient: reads and changes subvolumes through btrfs-progs, run through a callable.

The callable takes an argv and returns ``(rc, stdout, stderr)``: the modules pass one built on
AnsibleModule.run_command, the host command runs the program directly.
"""

from __future__ import annotations

import os
import shlex
import stat

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.parse import (
    BtrfsError,
    PathState,
    SUBVOLUME_ROOT_INODE,
    TOP_LEVEL_ID,
    chomp,
    mount_containing,
    parse_compression,
    parse_default_id,
    parse_filesystem_show,
    parse_mountinfo,
    parse_property,
    parse_subvolume_list,
    parse_subvolume_show,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._common.context import find_program, run_program
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import host_file_error


MOUNTINFO = "/proc/self/mountinfo"
_C_LOCALE = {"LC_ALL": "C", "LANG": "C"}
_LIST_ARGS = ("subvolume", "list", "-p", "-c", "-g", "-u", "-q", "-R")


class BtrfsClient:
    """Reads and changes subvolumes of mounted BTRFS filesystems for one task."""

    def __init__(self, run=run_program, find=find_program, mountinfo=MOUNTINFO):
        """RUN(argv, environ) runs a program and returns ``(rc, stdout, stderr)``; FIND(name) is its path or None."""
        self._run_program = run
        self._find = find
        self._mountinfo = mountinfo
        self._mounts = None
        self._btrfs = None

    def _run(self, *args):
        if self._btrfs is None:
            self._btrfs = self._find("btrfs")
            if not self._btrfs:
                raise BtrfsError("the btrfs command was not found on the target; install btrfs-progs")
        argv = [self._btrfs] + [str(arg) for arg in args]
        rc, stdout, stderr = self._run_program(argv, _C_LOCALE)
        if rc != 0:
            raise BtrfsError(
                f"{shlex.join(argv)} failed with exit code {rc}: {(stderr or stdout).strip()}",
                cmd=argv, rc=rc, stdout=stdout, stderr=stderr,
            )
        return stdout

    # ---- reading
    def mounts(self):
        """The mount table, read once per client: the modules mount and unmount nothing."""
        if self._mounts is None:
            try:
                with open(self._mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
                    self._mounts = parse_mountinfo(handle.read())
            except OSError as error:
                raise host_file_error("read", self._mountinfo, error) from None
        return self._mounts

    def inspect(self, path):
        """The :data:`PathState` of PATH, an absolute path without symlinks above its last component."""
        probe = path
        while True:
            try:
                info = os.lstat(probe)
                break
            except (FileNotFoundError, NotADirectoryError):
                # Not a directory: an ancestor is a file, which the caller reports as "not a directory".
                probe = os.path.dirname(probe)
            except OSError as error:
                raise host_file_error("look up", probe, error) from None
        mount = mount_containing(self.mounts(), probe)
        if probe != path:
            kind = "missing"
        elif stat.S_ISDIR(info.st_mode):
            on_btrfs = mount is not None and mount.fstype == "btrfs"
            kind = "subvolume" if on_btrfs and info.st_ino == SUBVOLUME_ROOT_INODE else "directory"
        else:
            kind = "other"
        return PathState(kind, mount)

    def subvolume(self, path):
        """The subvolume whose root is PATH: :func:`parse_subvolume_show` plus its compression."""
        info = parse_subvolume_show(self._run("subvolume", "show", path))
        info["compression"] = self.compression(path)
        return info

    def compression(self, path):
        return parse_compression(parse_property(self._run("property", "get", "-t", "inode", path, "compression"), "compression"))

    def default_id(self, path):
        """ID of the default subvolume of the filesystem PATH is on."""
        return parse_default_id(self._run("subvolume", "get-default", path))

    def subvolume_tree(self, path):
        """Every subvolume of the filesystem except the top level, with read_only, without paths."""
        entries = parse_subvolume_list(self._run(*_LIST_ARGS, path))
        read_only = {entry["id"] for entry in parse_subvolume_list(self._run(*(_LIST_ARGS + ("-r",)), path))}
        for entry in entries:
            entry["read_only"] = entry["id"] in read_only
        return entries

    def resolve(self, subvolume_id, path):
        """Path of a subvolume inside its filesystem ("/" is the top level), PATH being on that filesystem."""
        output = self._run("inspect-internal", "subvolid-resolve", subvolume_id, path)
        return "/" + chomp(output)

    def subvolumes(self, path):
        """:meth:`subvolume_tree` with each subvolume's path inside the filesystem."""
        entries = self.subvolume_tree(path)
        for entry in entries:
            entry["path"] = self.resolve(entry["id"], path)
        return entries

    def filesystem(self, mount_point):
        """uuid, label and devices of the filesystem mounted at MOUNT_POINT.

        ``filesystem show`` and ``filesystem label`` accept a mount point, not any path in it.
        """
        info = parse_filesystem_show(self._run("filesystem", "show", mount_point))
        info["label"] = chomp(self._run("filesystem", "label", mount_point)) or None
        return info

    # ---- changing
    def create(self, path):
        self._run("subvolume", "create", path)

    def snapshot(self, source, path, read_only=False):
        self._run("subvolume", "snapshot", *(["-r"] if read_only else []), source, path)

    def delete(self, path):
        self._run("subvolume", "delete", path)

    def set_read_only(self, path, read_only):
        self._run("property", "set", "-t", "subvol", path, "ro", "true" if read_only else "false")

    def set_compression(self, path, compression):
        self._run("property", "set", "-t", "inode", path, "compression", compression)

    def set_default(self, path):
        self._run("subvolume", "set-default", path)

    def reset_default(self, path):
        """Make the top level the default subvolume of the filesystem PATH is on."""
        self._run("subvolume", "set-default", TOP_LEVEL_ID, path)
