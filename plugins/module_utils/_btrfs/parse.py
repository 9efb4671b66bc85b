# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What btrfs-progs and /proc/self/mountinfo print, parsed: pure functions, tested on captured output.

btrfs-progs rather than libbtrfsutil's Python bindings: every host that has BTRFS has btrfs-progs,
while python3-btrfsutil is a separate package that is rarely installed (docs/btrfs.md has the
comparison). The price of the command line is parsing text, which is where community.general's
module went wrong, so only the forms that are stable and unambiguous:

- whether a path is a subvolume comes from the kernel, not from text: a subvolume's root directory
  is always inode 256 on a BTRFS mount (the test btrfs-progs itself uses);
- ``btrfs subvolume show``: tab-indented ``Key: value`` lines, stopping at the snapshot list
  (which holds names, not keys);
- ``btrfs subvolume list``: only the fixed leading fields (IDs, generations, UUIDs). Its path column
  is relative to the subvolume of the path it is given in some cases and to the top level in others,
  so paths come from ``btrfs inspect-internal subvolid-resolve``, which prints exactly one full path;
- ``btrfs property get``: ``name=value`` lines; ``btrfs subvolume get-default``: the leading ``ID n``;
- mounts from /proc/self/mountinfo (kernel ABI: octal escapes, the filesystem's device number).

The client (client.py) runs every command as an argument vector with ``LC_ALL=C``; a failing one
raises :class:`BtrfsError` carrying the command, its exit code and its output. The planner
(subvolume.py) reads and validates everything before it returns, so a plan that is returned can
only fail on a command error.
"""

from __future__ import annotations

import collections
import re

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError


TOP_LEVEL_ID = 5  # BTRFS_FS_TREE_OBJECTID: the top-level subvolume, "/" of the filesystem
SUBVOLUME_ROOT_INODE = 256  # BTRFS_FIRST_FREE_OBJECTID: the root directory of every subvolume
COMPRESSION_CHOICES = ("zstd", "lzo", "zlib", "none")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_SHOW_FIELDS = {
    "UUID": "uuid",
    "Parent UUID": "parent_uuid",
    "Received UUID": "received_uuid",
    "Subvolume ID": "id",
    "Generation": "generation",
    "Parent ID": "parent_id",
    "Flags": "flags",
}
_LIST_LINE = re.compile(
    r"ID (?P<id>\d+) gen (?P<generation>\d+) cgen \d+ parent (?P<parent_id>\d+) top level \d+"
    r" parent_uuid (?P<parent_uuid>\S+)\s+received_uuid (?P<received_uuid>\S+)\s+uuid (?P<uuid>\S+) path "
)
_DEFAULT_LINE = re.compile(r"ID (\d+)\b")
_FS_UUID = re.compile(r"uuid: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")

# "MISSING" follows the path when the device node is not there (as in a container).
_FS_DEVICE = re.compile(r"\s+devid\s+\d+\s+size\s+\S+\s+used\s+\S+\s+path\s+(?P<path>.+?)(?: MISSING)?$")
Mount = collections.namedtuple("Mount", "device root mount_point fstype source")
Mount.__doc__ = """One line of mountinfo. ``device`` (major:minor) is shared by every mount of one filesystem;
``root`` is the directory of the filesystem that is mounted (for BTRFS, the subvolume path)."""
PathState = collections.namedtuple("PathState", "kind mount")
PathState.__doc__ = """What is at a path: ``kind`` is subvolume, directory, other or missing; ``mount`` holds it
(for a missing path, the mount of its nearest existing ancestor)."""


class BtrfsError(OpdbusError):
    """A failure reported to the user as is; ``details`` (cmd, rc, stdout, stderr) go into the result."""


def _unescape(field):
    # mountinfo writes space, tab, newline and backslash in paths as \ooo.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text):
    """/proc/PID/mountinfo → list of :data:`Mount`, in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        # Optional fields (shared:N, master:N …) end at a lone "-".
        separator = fields.index("-", 6)
        mounts.append(Mount(
            device=fields[2],
            root=_unescape(fields[3]),
            mount_point=_unescape(fields[4]),
            fstype=fields[separator + 1],
            source=_unescape(fields[separator + 2]),
        ))
    return mounts


def mount_containing(mounts, path):
    """The mount an absolute, symlink-free PATH is on: longest mount point, the last one if stacked."""
    found = None
    for mount in mounts:
        point = mount.mount_point
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if found is None or len(point) >= len(found.mount_point):
                found = mount
    return found


def parse_subvolume_show(text):
    """``btrfs subvolume show`` → dict of id, uuid, parent_uuid, received_uuid, generation, parent_id, flags, read_only."""
    raw = {}
    # Line 1 is the path. Keys are tab-indented; the lines after "Snapshot(s):" are names, not keys.
    for line in text.splitlines()[1:]:
        key, separator, value = line.strip().partition(":")
        if key == "Snapshot(s)":
            break
        if line.startswith("\t") and separator and key in _SHOW_FIELDS:
            raw.setdefault(_SHOW_FIELDS[key], value.strip())
    missing = sorted(set(_SHOW_FIELDS) - {key for key, name in _SHOW_FIELDS.items() if name in raw})
    if missing:
        raise BtrfsError(f"unexpected output of btrfs subvolume show (no {', '.join(missing)}): {text[:300]!r}")
    flags = [] if raw["flags"] == "-" else [flag for flag in re.split(r"[,\s]+", raw["flags"]) if flag]
    return {
        "id": int(raw["id"]),
        "uuid": _optional(raw["uuid"]),
        "parent_uuid": _optional(raw["parent_uuid"]),
        "received_uuid": _optional(raw["received_uuid"]),
        "generation": int(raw["generation"]),
        # The top level has no parent; btrfs-progs prints 0.
        "parent_id": int(raw["parent_id"]) or None,
        "flags": flags,
        "read_only": "readonly" in flags,
    }


def parse_subvolume_list(text):
    """``btrfs subvolume list -p -c -g -u -q -R`` → list of dicts (id, generation, parent_id, uuids), no paths."""
    entries = []
    for line in text.splitlines():
        match = _LIST_LINE.match(line)
        if match:
            entry = match.groupdict()
            entries.append({
                "id": int(entry["id"]),
                "generation": int(entry["generation"]),
                "parent_id": int(entry["parent_id"]),
                "uuid": _optional(entry["uuid"]),
                "parent_uuid": _optional(entry["parent_uuid"]),
                "received_uuid": _optional(entry["received_uuid"]),
            })
        elif line.startswith("ID "):
            raise BtrfsError(f"unexpected output of btrfs subvolume list: {line!r}")
        # Anything else continues the path of the line before (a name with a newline): ignored.
    return entries


def parse_property(text, name):
    """``btrfs property get`` → the value of NAME, None when it is not set."""
    prefix = name + "="
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):] or None
    return None


def parse_default_id(text):
    """``btrfs subvolume get-default`` ("ID 5 (FS_TREE)" or "ID 256 gen … path …") → the ID."""
    match = _DEFAULT_LINE.match(text)
    if not match:
        raise BtrfsError(f"unexpected output of btrfs subvolume get-default: {text[:300]!r}")
    return int(match.group(1))


def parse_filesystem_show(text):
    """``btrfs filesystem show MOUNT`` → uuid and device paths (the label comes from ``filesystem label``)."""
    lines = text.splitlines()
    match = _FS_UUID.search(lines[0]) if lines else None
    if not match:
        raise BtrfsError(f"unexpected output of btrfs filesystem show: {text[:300]!r}")
    devices = [device.group("path") for device in map(_FS_DEVICE.match, lines[1:]) if device]
    return {"uuid": match.group(1), "devices": devices}


def parse_compression(value):
    """The compression property as this collection reports it: the kernel also accepts "no" for "none"."""
    return "none" if value == "no" else value


def _optional(value):
    return None if value == "-" else value


def chomp(output):
    """A command's output without its final newline (a label or path may end in spaces, so no strip)."""
    return output[:-1] if output.endswith("\n") else output
