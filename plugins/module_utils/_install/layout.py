# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk layout of the netboot guide, as plain data: partitions, subvolumes, mounts, fstab, boot entry.

GPT with a FAT32 ESP and one BTRFS partition holding the subvolumes ``@root @cache @timing @vectors
@state @snapshots``. Compression is stated as BTRFS really applies it: a mount option is one value
for the whole filesystem (the first mount sets it, later ``compress=`` options of other subvolumes
are ignored), so the level is one number for the filesystem; per subvolume only the algorithm can
differ, through the ``compression`` property.
"""

from __future__ import annotations

import re

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP_NAME = "opdbus-esp"
ROOT_NAME = "opdbus-root"
ESP_MOUNT = "/boot"
OPDBUS_DIR = "/var/lib/op-dbus"
# The guide's subvolumes, where they are mounted, and the compression it wanted for each.
GUIDE_SUBVOLUMES = (
    ("@root", "/", "zstd:1"),
    ("@cache", f"{OPDBUS_DIR}/cache", "zstd:3"),
    ("@timing", f"{OPDBUS_DIR}/timing", "zstd:3"),
    ("@vectors", f"{OPDBUS_DIR}/vectors", "zstd:3"),
    ("@state", f"{OPDBUS_DIR}/state", "zstd:1"),
    ("@snapshots", f"{OPDBUS_DIR}/snapshots", "zstd:1"),
)
ALGORITHMS = ("zstd", "lzo", "zlib", "none")
SUBVOLUME_NAME = re.compile(r"@[A-Za-z0-9_.-]{1,63}")


def guide_subvolumes():
    """The guide's subvolumes as opdbus_install's ``subvolumes`` option takes them."""
    return [{"name": name, "mount": mount} for name, mount, _wanted in GUIDE_SUBVOLUMES]


def partition_path(disk, number):
    """/dev/sda → /dev/sda1; /dev/nvme0n1 and /dev/loop3 → …p1, as the kernel names them."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def sfdisk_script(esp_mib):
    """The partition table, as sfdisk reads it on standard input."""
    return (f"label: gpt\nsize={esp_mib}MiB, type={ESP_TYPE}, name=\"{ESP_NAME}\"\n"
            f"type={LINUX_TYPE}, name=\"{ROOT_NAME}\"\n")


def subvolume_plan(subvolumes, default_algorithm):
    """SUBVOLUMES ([{name, mount, compression?}]) checked and in mount order (parents first), with each
    one's compression algorithm; raises ValueError naming the problem."""
    seen, mounts, plan = set(), set(), []
    for subvolume in subvolumes:
        name, mount = subvolume.get("name"), subvolume.get("mount")
        algorithm = subvolume.get("compression") or default_algorithm
        if not isinstance(name, str) or not SUBVOLUME_NAME.fullmatch(name):
            raise ValueError(f"subvolume name {name!r}: use @ followed by letters, digits, '.', '_' or '-'")
        if name in seen:
            raise ValueError(f"subvolume {name} is listed twice")
        if not isinstance(mount, str) or not mount.startswith("/") or "/../" in f"{mount}/" or "//" in mount:
            raise ValueError(f"subvolume {name}: mount {mount!r} must be an absolute path")
        mount = mount.rstrip("/") or "/"
        if mount in mounts:
            raise ValueError(f"subvolume {name}: {mount} is already the mount point of another subvolume")
        if mount == ESP_MOUNT or mount.startswith(ESP_MOUNT + "/"):
            raise ValueError(f"subvolume {name}: {mount} is the ESP's ({ESP_MOUNT})")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"subvolume {name}: compression {algorithm!r} is not one of {', '.join(ALGORITHMS)} "
                             "(the level is the filesystem's, see compression_level)")
        seen.add(name)
        mounts.add(mount)
        plan.append({"name": name, "mount": mount, "compression": algorithm})
    if "/" not in mounts:
        raise ValueError("no subvolume is mounted at /; the guide's layout mounts @root there")
    return sorted(plan, key=lambda item: (item["mount"] != "/", item["mount"].count("/"), item["mount"]))


def mount_options(subvolume, level):
    """The options of SUBVOLUME's mount: what the kernel then shows in /proc/mounts."""
    return f"subvol={subvolume['name']},noatime,compress=zstd:{level}"


def fstab(btrfs_uuid, esp_uuid, plan, level):
    """/etc/fstab of the installed system, by UUID."""
    lines = ["# Written by opdbus.fleet.opdbus_install. Every subvolume mount carries the same compress=:",
             "# BTRFS applies the first mount's to the whole filesystem; the compression property of a",
             "# subvolume chooses its algorithm (btrfs property get PATH compression)."]
    for subvolume in plan:
        lines.append(f"UUID={btrfs_uuid} {subvolume['mount']} btrfs {mount_options(subvolume, level)} 0 0")
    lines.append(f"UUID={esp_uuid} {ESP_MOUNT} vfat umask=0077,noatime 0 2")
    return "\n".join(lines) + "\n"


def boot_entry(kernel, initrd, btrfs_uuid, root_subvolume, kernel_options):
    """The systemd-boot entry of the installed kernel, and loader.conf choosing it. Nobody sits at the
    console of an unattended first boot to answer systemd-firstboot's questions, so it is off."""
    options = f"root=UUID={btrfs_uuid} rootflags=subvol={root_subvolume} rw systemd.firstboot=off {kernel_options}".strip()
    entry = f"title op-dbus ({kernel})\nlinux /{kernel}\ninitrd /{initrd}\noptions {options}\n"
    return entry, "default opdbus.conf\ntimeout 0\neditor no\n"


def parse_sha256sums(text):
    """{name: digest} from the text of a SHA256SUMS file (``sha256sum`` output, text or binary mode)."""
    sums = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S.*)", line.strip())
        if match:
            sums[match.group(2)] = match.group(1)
    return sums
