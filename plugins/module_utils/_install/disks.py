# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which disk an install may write, safe by construction.

``disk_facts`` reads what the kernel knows about a disk (sysfs, the mount table, swaps, holders) and
what signatures are on it (wipefs, which only reads with ``--no-act``). ``refusals`` is pure: it
lists every reason not to write the disk. An install writes nothing unless that list is empty, so a
disk in use, a disk with data on it (unless wiping is allowed) and a disk its owner did not confirm
by an identity only they know (serial, WWN, ``/dev/disk/by-id`` name; a loop device's backing file)
are never touched.
"""

from __future__ import annotations

import json
import os
import stat

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.parse import parse_mountinfo
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError

SYS_BLOCK = "/sys/class/block"
BY_ID = "/dev/disk/by-id"
MOUNTINFO = "/proc/self/mountinfo"
SWAPS = "/proc/swaps"
# The ESP, a BTRFS partition worth installing to, and the GPT's own sectors.
MINIMUM_DISK_BYTES = (512 + 1536 + 2) << 20


class InstallError(OpdbusError):
    """An install refused or failed; nothing was written when it was refused."""


def _read(path, default=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return default


def disk_facts(path, run, sys_block=SYS_BLOCK, by_id=BY_ID, mountinfo=MOUNTINFO, swaps=SWAPS):
    """What ``refusals`` decides on, for the disk at PATH: a dict of plain values (see the unit fixtures).

    RUN(argv) runs a program and returns ``(rc, stdout, stderr)``."""
    device = os.path.realpath(path)
    try:
        mode = os.stat(device).st_mode
    except OSError as error:
        raise InstallError(f"disk {path}: {error.strerror}; give the whole disk, e.g. /dev/disk/by-id/NAME") from None
    if not stat.S_ISBLK(mode):
        raise InstallError(f"disk {path} is not a block device; give the whole disk, e.g. /dev/disk/by-id/NAME")
    name = os.path.basename(device)
    sysfs = os.path.join(sys_block, name)
    partitions = sorted(entry for entry in os.listdir(sysfs)
                        if entry.startswith(name) and os.path.exists(os.path.join(sysfs, entry, "partition")))
    members = [name] + partitions
    numbers = {_read(os.path.join(sys_block, member, "dev")): f"/dev/{member}" for member in members}
    try:
        with open(mountinfo, encoding="utf-8") as handle:
            mounts = parse_mountinfo(handle.read())
        with open(swaps, encoding="utf-8") as handle:
            swap_devices = [line.split()[0] for line in handle.read().splitlines()[1:] if line.strip()]
    except OSError as error:
        raise InstallError(f"cannot read the mount table: {error.strerror}") from None
    signatures = []
    for member in members:
        rc, stdout, stderr = run(["wipefs", "--no-act", "--json", "--output", "DEVICE,TYPE,OFFSET", f"/dev/{member}"])
        if rc != 0:
            raise InstallError(f"cannot read the signatures on /dev/{member}: {stderr.strip()}")
        for found in json.loads(stdout or '{"signatures": []}').get("signatures", []):
            signatures.append({"device": f"/dev/{member}", "type": found.get("type"), "offset": found.get("offset")})
    by_id_names = sorted(entry for entry in (os.listdir(by_id) if os.path.isdir(by_id) else ())
                         if os.path.realpath(os.path.join(by_id, entry)) == device)
    return {
        "device": device,
        "partition_of": _read(os.path.join(sysfs, "partition")) and os.path.basename(os.path.dirname(os.path.realpath(sysfs))),
        "size_bytes": int(_read(os.path.join(sysfs, "size"), "0")) * 512,
        "read_only": _read(os.path.join(sysfs, "ro")) == "1",
        "serial": _read(os.path.join(sysfs, "serial")) or _read(os.path.join(sysfs, "device", "serial")) or None,
        "wwid": _read(os.path.join(sysfs, "wwid")) or _read(os.path.join(sysfs, "device", "wwid")) or None,
        "by_id": by_id_names,
        "backing_file": _read(os.path.join(sysfs, "loop", "backing_file")) or None,
        "partitions": [f"/dev/{partition}" for partition in partitions],
        "mounted": sorted({(numbers[mount.device], mount.mount_point) for mount in mounts if mount.device in numbers}),
        "swap": sorted(os.path.realpath(swap) for swap in swap_devices if os.path.realpath(swap) in numbers.values()),
        "holders": sorted(f"/dev/{member} is held by {holder}" for member in members
                          for holder in os.listdir(os.path.join(sys_block, member, "holders"))
                          if os.path.isdir(os.path.join(sys_block, member, "holders"))),
        "signatures": signatures,
    }


def identities(facts):
    """The values that confirm FACTS' disk: serial, WWID, by-id names (bare and as paths), a loop's backing file."""
    values = [facts["serial"], facts["wwid"], facts["backing_file"]]
    values += facts["by_id"] + [os.path.join(BY_ID, name) for name in facts["by_id"]]
    return [value for value in values if value]


def refusals(facts, confirm, allow_wipe):
    """Every reason not to write the disk of FACTS, in words; empty when the install may go ahead."""
    device = facts["device"]
    reasons = []
    if facts["partition_of"]:
        reasons.append(f"{device} is a partition of /dev/{facts['partition_of']}; give the whole disk")
    if facts["read_only"]:
        reasons.append(f"{device} is read-only")
    if facts["size_bytes"] < MINIMUM_DISK_BYTES:
        reasons.append(f"{device} has {facts['size_bytes'] >> 20} MiB; the layout needs at least {MINIMUM_DISK_BYTES >> 20} MiB")
    for member, mount_point in facts["mounted"]:
        reasons.append(f"{member} is mounted at {mount_point}")
    for member in facts["swap"]:
        reasons.append(f"{member} is in use as swap")
    reasons += [f"{holder} (in use by device mapper, RAID or LVM)" for holder in facts["holders"]]
    if facts["signatures"] and not allow_wipe:
        by_member = {}
        for signature in facts["signatures"]:
            by_member.setdefault(signature["device"], [])
            if signature["type"] not in by_member[signature["device"]]:
                by_member[signature["device"]].append(signature["type"])
        found = "; ".join(f"{', '.join(types)} on {member}" for member, types in by_member.items())
        reasons.append(f"{device} holds data ({found}); set allow_wipe to erase it")
    known = identities(facts)
    if not known:
        reasons.append(f"{device} has no serial, WWID or /dev/disk/by-id name to confirm it by, so it cannot be confirmed")
    elif confirm not in known:
        given = f"confirm {confirm!r} is not its identity" if confirm else "confirm is not set"
        reasons.append(f"{device} is not confirmed: {given}; set confirm to one of {', '.join(known)}")
    return reasons
