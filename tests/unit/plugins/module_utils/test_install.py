# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The install's pure logic: which disks are refused, on facts captured from real disks
(tests/unit/fixtures/install: loop devices on the controller, virtio disks of the netboot VM), and
the layout - partitions, subvolumes, fstab, boot entry, checksums. Real installs: tests/netboot."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._install import layout
from ansible_collections.opdbus.fleet.plugins.module_utils._install.disks import identities, refusals

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "install")


def facts(name, **changes):
    with open(os.path.join(FIXTURES, name + ".json")) as handle:
        return dict(json.load(handle), **changes)


def test_a_blank_loop_device_confirmed_by_its_backing_file_may_be_written():
    assert refusals(facts("loop_blank"), "/tmp/cap/disk.img", allow_wipe=False) == []


def test_a_mounted_partition_and_data_are_each_named_and_allow_wipe_lifts_only_the_data_refusal():
    mounted = facts("loop_mounted_gpt_ext4")
    reasons = refusals(mounted, "/tmp/cap/disk.img", allow_wipe=False)
    assert reasons == ["/dev/loop0p2 is mounted at /tmp/cap/mnt",
                       "/dev/loop0 holds data (gpt, PMBR on /dev/loop0; ext4 on /dev/loop0p2); set allow_wipe to erase it"]
    assert refusals(mounted, "/tmp/cap/disk.img", allow_wipe=True) == ["/dev/loop0p2 is mounted at /tmp/cap/mnt"]


def test_a_partition_in_use_as_swap_is_refused_even_when_wiping_is_allowed():
    assert refusals(facts("loop_swap_ext4"), "/tmp/cap/disk.img", allow_wipe=True) == ["/dev/loop0p1 is in use as swap"]


def test_a_disk_held_by_device_mapper_is_refused():
    held = facts("loop_blank", holders=["/dev/loop0p1 is held by dm-0"])
    assert refusals(held, "/tmp/cap/disk.img", allow_wipe=True) == [
        "/dev/loop0p1 is held by dm-0 (in use by device mapper, RAID or LVM)"]


@pytest.mark.parametrize("confirm", [None, "", "/dev/loop0", "loop0", "/tmp/cap/other.img"])
def test_a_device_path_or_another_identity_never_confirms_a_disk(confirm):
    (reason,) = refusals(facts("loop_blank"), confirm, allow_wipe=True)
    assert reason.startswith("/dev/loop0 is not confirmed: ") and reason.endswith("set confirm to one of /tmp/cap/disk.img")


def test_a_virtio_disk_is_confirmed_by_its_serial_or_by_id_name_but_not_its_path():
    target = facts("virtio_target")
    assert set(identities(target)) >= {target["serial"], *target["by_id"]}
    for value in identities(target):
        assert refusals(target, value, allow_wipe=False) == []
    assert "not confirmed" in refusals(target, target["device"], allow_wipe=False)[0]


def test_the_decoy_of_the_netboot_vm_is_refused_for_its_data_and_for_the_targets_serial():
    decoy, target = facts("virtio_decoy"), facts("virtio_target")
    reasons = refusals(decoy, target["serial"], allow_wipe=False)
    assert [reason.split(" (")[0].split(":")[0] for reason in reasons] == [
        f"{decoy['device']} holds data", f"{decoy['device']} is not confirmed"]


def test_a_disk_without_any_identity_cannot_be_confirmed_at_all():
    anonymous = facts("loop_blank", backing_file=None)
    assert refusals(anonymous, "anything", allow_wipe=True) == [
        "/dev/loop0 has no serial, WWID or /dev/disk/by-id name to confirm it by, so it cannot be confirmed"]


def test_a_partition_a_read_only_or_a_small_disk_is_refused():
    reasons = refusals(facts("loop_blank", partition_of="loop0", read_only=True, size_bytes=1 << 30),
                       "/tmp/cap/disk.img", allow_wipe=True)
    assert reasons == ["/dev/loop0 is a partition of /dev/loop0; give the whole disk", "/dev/loop0 is read-only",
                       "/dev/loop0 has 1024 MiB; the layout needs at least 2050 MiB"]


def test_partition_names_follow_the_kernel():
    assert layout.partition_path("/dev/vda", 2) == "/dev/vda2"
    assert layout.partition_path("/dev/nvme0n1", 1) == "/dev/nvme0n1p1"
    assert layout.partition_path("/dev/loop3", 2) == "/dev/loop3p2"


def test_the_guides_six_subvolumes_mount_root_first_and_only_algorithms_per_subvolume():
    guide = layout.guide_subvolumes()
    plan = layout.subvolume_plan(guide, "zstd")
    assert [item["name"] for item in plan] == ["@root", "@cache", "@snapshots", "@state", "@timing", "@vectors"]
    assert {item["compression"] for item in plan} == {"zstd"}
    with pytest.raises(ValueError, match="compression 'zstd:3' is not one of"):
        layout.subvolume_plan(guide[:1] + [{"name": "@cache", "mount": "/c", "compression": "zstd:3"}], "zstd")


@pytest.mark.parametrize("subvolumes, problem", [
    ([{"name": "@cache", "mount": "/var/cache"}], "no subvolume is mounted at /"),
    ([{"name": "root", "mount": "/"}], "use @ followed by"),
    ([{"name": "@root", "mount": "/"}, {"name": "@root", "mount": "/x"}], "listed twice"),
    ([{"name": "@root", "mount": "/"}, {"name": "@b", "mount": "/"}], "already the mount point"),
    ([{"name": "@root", "mount": "/"}, {"name": "@b", "mount": "relative"}], "must be an absolute path"),
    ([{"name": "@root", "mount": "/"}, {"name": "@b", "mount": "/boot/x"}], "is the ESP's"),
])
def test_a_layout_that_cannot_be_mounted_is_refused_by_name(subvolumes, problem):
    with pytest.raises(ValueError, match=problem):
        layout.subvolume_plan(subvolumes, "zstd")


def test_fstab_mounts_every_subvolume_by_uuid_with_the_filesystems_one_compression_level():
    plan = layout.subvolume_plan(layout.guide_subvolumes(), "zstd")
    text = layout.fstab("b-uuid", "e-uuid", plan, 1)
    rows = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert rows[0] == ["UUID=b-uuid", "/", "btrfs", "subvol=@root,noatime,compress=zstd:1", "0", "0"]
    assert {row[3] for row in rows[:-1]} == {f"subvol={item['name']},noatime,compress=zstd:1" for item in plan}
    assert rows[-1] == ["UUID=e-uuid", "/boot", "vfat", "umask=0077,noatime", "0", "2"]


def test_the_boot_entry_boots_the_installed_kernel_from_the_root_subvolume():
    entry, loader = layout.boot_entry("vmlinuz-6.1.0-28-amd64", "initrd.img-6.1.0-28-amd64", "b-uuid", "@root", "console=ttyS0")
    assert "linux /vmlinuz-6.1.0-28-amd64\ninitrd /initrd.img-6.1.0-28-amd64\n" in entry
    assert entry.endswith("options root=UUID=b-uuid rootflags=subvol=@root rw systemd.firstboot=off console=ttyS0\n")
    assert loader.startswith("default opdbus.conf\n")


def test_sha256sums_in_text_and_binary_mode_are_read_and_other_lines_ignored():
    digest = "a" * 64
    assert layout.parse_sha256sums(f"{digest}  vmlinuz\n{'b' * 64} *initrd.img\nnot a line\n") == {
        "vmlinuz": digest, "initrd.img": "b" * 64}


def test_the_partition_table_has_the_esp_first_and_the_btrfs_partition_after_it():
    script = layout.sfdisk_script(512)
    assert script.splitlines() == ["label: gpt", f'size=512MiB, type={layout.ESP_TYPE}, name="opdbus-esp"',
                                   f'type={layout.LINUX_TYPE}, name="opdbus-root"']
