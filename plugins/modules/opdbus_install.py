#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_install
short_description: Install the running system to a disk in the netboot guide's GPT and BTRFS layout
version_added: 0.1.0
description:
  - Run on a live installer host (see the R(opdbus.fleet.netboot_install,ansible_collections.opdbus.fleet.netboot_install_role)
    role). Copies the system at O(source) to O(disk) - GPT with a FAT32 ESP and a BTRFS partition, the
    subvolumes C(@root @cache @timing @vectors @state @snapshots), fstab by UUID, and systemd-boot on the
    ESP booting the installed kernel (from the firmware's removable-media path C(\EFI\BOOT\BOOTX64.EFI),
    so no NVRAM entry is needed).
  - Safe by construction. Before the first write it refuses, naming each reason - a disk (or one of its
    partitions) that is mounted, used as swap or held by device mapper, RAID or LVM; a disk that holds
    data unless O(allow_wipe); a disk not confirmed by O(confirm); a partition instead of a disk; a disk
    that is too small; no O(authorized_keys); boot files that differ from the published O(image_checksums).
    A refused install writes nothing.
  - A disk that already holds an op-dbus install (its two partitions named C(opdbus-esp) and C(opdbus-root),
    with FAT and BTRFS) is left alone and reported with C(changed=false).
  - The installed system gets the keys in O(authorized_keys) for root and sshd settings that accept keys
    only; every password in the copied image is locked. Its ledger starts with one C(install) entry that
    records the disk, the layout with the UUIDs and fstab, the compression in effect and the checksums.
  - Compression is what BTRFS really does - the level (O(compression_level)) is one value for the whole
    filesystem, set by the first mount's C(compress=zstd:N); each subvolume's algorithm is its
    C(compression) property. The result reports both as read back from C(/proc/mounts) and the properties.
author:
  - opdbus.fleet developers (@opdbus)
options:
  disk:
    description: The whole disk to install to, preferably as C(/dev/disk/by-id/NAME).
    type: path
    required: true
  confirm:
    description:
      - The disk's identity, which only its owner knows - its serial, WWID, a C(/dev/disk/by-id) name
        (with or without the directory) or, for a loop device, its backing file. A device path such as
        C(/dev/sda) alone never confirms a disk.
    type: str
  allow_wipe:
    description: Erase the signatures (partition tables, file systems) found on the disk and its partitions.
    type: bool
    default: false
  authorized_keys:
    description: SSH public keys that may log in as root on the installed system; at least one.
    type: list
    elements: str
    required: true
  hostname:
    description: The installed system's host name; the image's when unset.
    type: str
  profile:
    description: The profile the installed system carries (recorded in the C(install) entry).
    type: str
  esp_size_mib:
    description: Size of the ESP in MiB.
    type: int
    default: 512
  subvolumes:
    description:
      - The subvolumes, each with C(name) (C(@...)), C(mount) and optionally C(compression) (an algorithm of
        O(compression)'s choices). One must be mounted at C(/). The guide's six by default, under
        C(/var/lib/op-dbus) apart from C(@root).
    type: list
    elements: dict
  compression:
    description: The compression algorithm of subvolumes that do not name their own (their C(compression) property).
    type: str
    choices: [zstd, lzo, zlib, none]
    default: zstd
  compression_level:
    description: The zstd level of the whole filesystem (C(compress=zstd:LEVEL) on every mount, 1 to 15).
    type: int
    default: 1
  source:
    description:
      - The tree to install - by default the running system. Its C(/boot) must hold one C(vmlinuz-*) and one
        C(initrd.img-*), and it must contain systemd-boot (C(usr/lib/systemd/boot/efi/systemd-bootx64.efi)).
      - Its ledger and snapshots (C(/var/lib/op-dbus)), machine id, host keys and root's authorized keys are not copied.
    type: path
    default: /
  target:
    description: Where the new file systems are mounted during the install.
    type: path
    default: /mnt/opdbus-target
  image_checksums:
    description:
      - The text of the SHA256SUMS file published with the images. The kernel and initramfs of O(source)
        must match its C(vmlinuz) and C(initrd.img) lines, or the install is refused.
    type: str
  kernel_options:
    description: More kernel command-line options of the installed system's boot entry, such as V(console=ttyS0).
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Runs every check and returns the plan; writes nothing.
  diff_mode:
    support: none
    description: The plan in the result says what would be written.
notes:
  - Needs sfdisk (fdisk), mkfs.fat (dosfstools), mmd and mcopy (mtools, which write the ESP without mounting it),
    btrfs-progs, wipefs, blkid and partx (util-linux) and tar on the host.
seealso:
  - module: opdbus.fleet.btrfs_subvolume
  - module: opdbus.fleet.opdbus_ledger_info
"""

EXAMPLES = r"""
- name: Install the live system to the disk its owner confirmed
  opdbus.fleet.opdbus_install:
    disk: /dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456
    confirm: S64ANS0T123456
    allow_wipe: true
    hostname: laptop-042
    profile: laptop
    authorized_keys:
      - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOpdbusExampleKeyOnly admin@example"
"""

RETURN = r"""
disk:
  description: What was found on the disk - device, serial, WWID, by-id names, partitions, mounts, swap, holders, signatures.
  returned: always
  type: dict
plan:
  description: The partitions, subvolumes, mount options, signatures to wipe, boot files and their checksums (check mode).
  returned: check mode
  type: dict
installed:
  description: The UUIDs (C(btrfs), C(esp)) of an op-dbus install already on the disk.
  returned: when the disk already holds one
  type: dict
uuids:
  description: The UUIDs of the new BTRFS file system (C(btrfs)) and ESP (C(esp)).
  returned: changed and not check mode
  type: dict
compression_in_effect:
  description: Per mount point, the subvolume, the C(compress) option in C(/proc/mounts) and its C(compression) property.
  returned: changed and not check mode
  type: dict
  sample: {"/": {subvolume: "@root", mount_option: "zstd:1", property: zstd}}
entry:
  description: The C(install) entry, the first of the installed system's ledger.
  returned: changed and not check mode
  type: dict
checkpoint:
  description: The installed system's ledger checkpoint, for the controller to keep.
  returned: changed and not check mode
  type: dict
refusals:
  description: Every reason the install was refused (on failure).
  returned: failed
  type: list
  elements: str
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._install.installer import install_spec, install_task
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module


def main():
    run_module(install_spec(), install_task)


if __name__ == "__main__":
    main()
