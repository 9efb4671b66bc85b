# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the BTRFS modules read and return: normalised paths, a subvolume, a filesystem (btrfs_info)."""

from __future__ import annotations

import os

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.client import BtrfsClient
from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.parse import BtrfsError


def normalise_path(path, option="path"):
    """The path given as OPTION, normalised; relative paths, newlines (line-based output) and NULs are refused."""
    if not os.path.isabs(path) or "\n" in path or "\0" in path:
        raise BtrfsError(f"{option} must be an absolute path without newlines, got {path!r}")
    path = os.path.normpath(path)
    # Symlinks above the last component are followed; the last component is what the task names,
    # so a symlink there is not a subvolume (and is never deleted through).
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def require_btrfs(path, found):
    """Refuse PATH unless FOUND (its PathState) is on a BTRFS mount."""
    if found.mount is None or found.mount.fstype != "btrfs":
        fstype, where = (found.mount.fstype, found.mount.mount_point) if found.mount else ("unknown", "an unknown place")
        raise BtrfsError(f"{path} is not on BTRFS: it is on a {fstype} filesystem mounted at {where}")


def describe_subvolume(client, path, default_id=None):
    """The subvolume at PATH as the modules return it: :meth:`BtrfsClient.subvolume`, path and default.

    DEFAULT_ID is the filesystem's default subvolume id when the caller has already read it.
    """
    subvolume = client.subvolume(path)
    subvolume["path"] = path
    subvolume["default"] = (client.default_id(path) if default_id is None else default_id) == subvolume["id"]
    return subvolume


def describe_filesystem(client, path):
    """The filesystem PATH is on and its subvolumes (all but the top level), as btrfs_info returns them."""
    path = normalise_path(path)
    found = client.inspect(path)
    if found.kind == "missing":
        raise BtrfsError(f"{path} does not exist")
    require_btrfs(path, found)
    filesystem = client.filesystem(found.mount.mount_point)
    default_id = client.default_id(path)
    filesystem["default_subvolume"] = {"id": default_id, "path": client.resolve(default_id, path)}
    mounts = [mount for mount in client.mounts() if mount.device == found.mount.device]
    subvolumes = client.subvolumes(path)
    for subvolume in subvolumes:
        subvolume["mountpoints"] = [mount.mount_point for mount in mounts if mount.root == subvolume["path"]]
    return {"filesystem": filesystem, "subvolumes": subvolumes}


def info_task(params, check_mode, context):
    """btrfs_info: the filesystem ``path`` is on, and its subvolumes."""
    return describe_filesystem(BtrfsClient(context.run, context.find_program), params["path"])
