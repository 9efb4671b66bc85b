# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""opdbus_install on loop devices of the controller: every refusal leaves the disk byte-identical, and an
install writes the guide's layout - GPT, ESP, six subvolumes with their compression, fstab by UUID,
systemd-boot, keys only - and a ledger that starts with an ``install`` entry. The source is the VM image
(the fleet's root file system with Debian's kernel and systemd-boot), mounted read-only."""

import json
import os
import subprocess

import pytest
from conftest import Phases, run_local_module, sha256_of
from fleet import booted_fleet, ensure_rootfs, ensure_vm_image, run

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDisklayoutTestKeyOnlyXXXXXXXXXXXXXXXXXXXX test@opdbus"
DISK_SIZE = "3G"


@pytest.fixture(scope="module")
def workspace():
    with booted_fleet(os.environ.get("OPDBUS_NETBOOT_LOOP_FLEET", "nbloop"), 0) as fleet:
        source = os.path.join(fleet.run_dir, "source")
        os.makedirs(source)
        run(["mount", "-o", "ro,loop", ensure_vm_image(ensure_rootfs())["disk"], source])
        yield fleet, source


def loop_disk(fleet, name, prepare=""):
    """A loop device over a new sparse file NAME of the fleet, after the shell commands PREPARE ($1 is the
    disk, $2 a directory for its mount)."""
    image = os.path.join(fleet.run_dir, name)
    run(["truncate", "-s", DISK_SIZE, image])
    disk = run(["losetup", "--find", "--show", "--partscan", image]).stdout.strip()
    if prepare:
        run(["sh", "-euc", prepare, "sh", disk, image + ".mnt"])
    return disk, image


def install_arguments(disk, image, source, fleet, **overrides):
    return dict({"disk": disk, "confirm": image, "authorized_keys": [KEY], "source": source,
                 "target": os.path.join(fleet.run_dir, "target"), "hostname": "layout-test", "profile": "laptop"},
                **overrides)


# Each case: how the disk is prepared (sh), the arguments that differ, the reason named.
# sfdisk; then, where the kernel has not read the table within a second, add the partitions; wait for the node.
PARTITIONED = ("| sfdisk -q $1; sleep 1; [ -e /sys/class/block/${1#/dev/}p1 ] || partx --add $1; "
               "for i in $(seq 100); do [ -b ${1}p$P ] && break; sleep 0.1; done")
WITH_DATA = "P=2; printf 'label: gpt\\nsize=64MiB\\ntype=linux\\n' " + PARTITIONED + "; mkfs.ext4 -q ${1}p2"
REFUSALS = {
    "not confirmed": ("", {"confirm": None}, "is not confirmed: confirm is not set; set confirm to one of"),
    "a device path is no confirmation": ("", {"confirm": "DISK"}, "is not confirmed: confirm 'DISK' is not its identity"),
    "data without allow_wipe": (WITH_DATA, {}, "holds data (gpt, PMBR on DISK; ext4 on DISKp2); set allow_wipe to erase it"),
    "a mounted partition": (WITH_DATA + "; mkdir -p $2; mount ${1}p2 $2", {"allow_wipe": True}, "DISKp2 is mounted at IMAGE.mnt"),
    "a swap partition": ("P=1; printf 'label: gpt\\ntype=swap\\n' " + PARTITIONED + "; mkswap -q ${1}p1; swapon ${1}p1",
                         {"allow_wipe": True}, "DISKp1 is in use as swap"),
    "no authorized key": ("", {"authorized_keys": []}, "no authorized key is given, and an installed system never gets a password"),
    "a kernel that is not the published one": (
        "", {"image_checksums": f"{'0' * 64}  vmlinuz\n{'0' * 64}  initrd.img\n"}, "is not the published " + "0" * 64 + " of vmlinuz"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_names_its_reason_and_leaves_the_disk_byte_identical(workspace, case):
    fleet, source = workspace
    prepare, overrides, reason = REFUSALS[case]
    disk, image = loop_disk(fleet, f"refused-{sorted(REFUSALS).index(case)}.img", prepare)
    try:
        before = sha256_of(image)
        arguments = install_arguments(disk, image, source, fleet, **overrides)
        if arguments["confirm"] == "DISK":
            arguments["confirm"] = disk
        result = run_local_module("opdbus.fleet.opdbus_install", arguments)
        assert result.get("failed") and "MODULE FAILURE" not in result.get("msg", "") and "module_stderr" not in result, result
        assert result["msg"].startswith(f"refusing to install to {disk}; nothing was written: "), result["msg"]
        assert reason.replace("DISK", disk).replace("IMAGE", image) in result["msg"], result["msg"]
        assert sha256_of(image) == before, f"{case}: the refused install changed the disk"
        assert not os.path.ismount(arguments["target"])
    finally:
        subprocess.run(["sh", "-c", f"swapoff {disk}p1; umount {image}.mnt"], capture_output=True, check=False)
        run(["losetup", "-d", disk])


@pytest.fixture(scope="module")
def installed(workspace):
    fleet, source = workspace
    phases = Phases("loop install")
    disk, image = loop_disk(fleet, "installed.img", WITH_DATA)
    arguments = install_arguments(disk, image, source, fleet, allow_wipe=True)
    before = sha256_of(image)
    predicted = run_local_module("opdbus.fleet.opdbus_install", arguments, check_mode=True)
    assert sha256_of(image) == before, "check mode wrote to the disk"
    phases.done("check mode")
    first = run_local_module("opdbus.fleet.opdbus_install", arguments)
    phases.done("install")
    yield {"disk": disk, "arguments": arguments, "predicted": predicted, "first": first, "fleet": fleet}
    run(["losetup", "-d", disk])


def test_check_mode_predicts_the_install_and_writes_nothing(installed):
    predicted, first = installed["predicted"], installed["first"]
    assert predicted["changed"] and first["changed"] and not first.get("failed"), first
    planned = [item["name"] for item in predicted["plan"]["subvolumes"]]
    assert planned == ["@root", "@cache", "@snapshots", "@state", "@timing", "@vectors"]
    assert set(predicted["plan"]["wipe"]) == {installed["disk"], f"{installed['disk']}p2"}


def test_the_disk_has_a_gpt_with_a_512_mib_esp_and_a_btrfs_partition(installed):
    disk = installed["disk"]
    table = json.loads(run(["sfdisk", "--json", disk]).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and esp["size"] * 512 == 512 << 20 and esp["name"] == "opdbus-esp"
    assert root["name"] == "opdbus-root"
    assert run(["blkid", "-p", "-s", "TYPE", "-o", "value", f"{disk}p1"]).stdout.strip() == "vfat"
    assert run(["blkid", "-p", "-s", "TYPE", "-o", "value", f"{disk}p2"]).stdout.strip() == "btrfs"


@pytest.fixture(scope="module")
def mounted_root(installed):
    """The installed BTRFS top level, mounted read-only for inspection, and a reader of the ESP's files
    (mtools: the kernel of the machine running this may have no vfat)."""
    fleet, disk = installed["fleet"], installed["disk"]
    top = os.path.join(fleet.run_dir, "inspect-top")
    os.makedirs(top)
    run(["mount", "-o", "ro,subvolid=5", f"{disk}p2", top])

    def esp_file(path):
        return subprocess.run(["mtype", "-i", f"{disk}p1", f"::{path}"], capture_output=True, check=True,
                              env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout
    yield top, esp_file
    run(["umount", top])


def test_six_subvolumes_with_their_compression_property_and_fstab_by_uuid(installed, mounted_root):
    top, _esp_file = mounted_root
    listed = run(["btrfs", "subvolume", "list", top]).stdout.split()
    assert sorted(name for name in listed if name.startswith("@")) == sorted(
        ["@root", "@cache", "@timing", "@vectors", "@state", "@snapshots"])
    for name in ("@root", "@cache", "@snapshots"):
        assert run(["btrfs", "property", "get", os.path.join(top, name), "compression"]).stdout.strip() == "compression=zstd"
    uuids = installed["first"]["uuids"]
    fstab = [line.split() for line in open(os.path.join(top, "@root/etc/fstab")) if line.strip() and not line.startswith("#")]
    assert ["UUID=" + uuids["btrfs"], "/", "btrfs", "subvol=@root,noatime,compress=zstd:1", "0", "0"] in fstab
    assert ["UUID=" + uuids["esp"], "/boot", "vfat", "umask=0077,noatime", "0", "2"] in fstab
    assert run(["blkid", "-p", "-s", "UUID", "-o", "value", f"{installed['disk']}p2"]).stdout.strip() == uuids["btrfs"]
    # What the kernel applied while the install had it mounted: the filesystem's one level, each subvolume's algorithm.
    in_effect = installed["first"]["compression_in_effect"]
    assert set(in_effect) == {"/", "/var/lib/op-dbus/cache", "/var/lib/op-dbus/timing", "/var/lib/op-dbus/vectors",
                              "/var/lib/op-dbus/state", "/var/lib/op-dbus/snapshots"}
    assert {(value["mount_option"], value["property"]) for value in in_effect.values()} == {("zstd:1", "zstd")}


def test_systemd_boot_boots_the_installed_kernel_from_root_subvolume(installed, mounted_root):
    top, esp_file = mounted_root
    source = installed["arguments"]["source"]
    assert esp_file("/EFI/BOOT/BOOTX64.EFI") == open(os.path.join(source, "usr/lib/systemd/boot/efi/systemd-bootx64.efi"), "rb").read()
    entry = esp_file("/loader/entries/opdbus.conf").decode()
    kernel = next(line.split()[1] for line in entry.splitlines() if line.startswith("linux "))
    initrd = next(line.split()[1] for line in entry.splitlines() if line.startswith("initrd "))
    assert esp_file(kernel) == open(os.path.join(source, "boot", kernel.lstrip("/")), "rb").read()
    assert esp_file(initrd) == open(os.path.join(source, "boot", initrd.lstrip("/")), "rb").read()
    assert f"root=UUID={installed['first']['uuids']['btrfs']} rootflags=subvol=@root rw systemd.firstboot=off" in entry
    assert os.path.exists(os.path.join(top, "@root/usr/bin/python3"))


def test_keys_only_no_password_and_a_ledger_that_starts_with_the_install(installed, mounted_root):
    top, _esp_file = mounted_root
    root = os.path.join(top, "@root")
    assert open(os.path.join(root, "root/.ssh/authorized_keys")).read() == KEY + "\n"
    assert "PasswordAuthentication no" in open(os.path.join(root, "etc/ssh/sshd_config.d/10-opdbus-keys-only.conf")).read()
    hashes = [row.split(":")[1] for row in open(os.path.join(root, "etc/shadow")).read().splitlines()]
    assert all(value.startswith(("!", "*")) or value == "" for value in hashes)
    assert all(value != "" for value in hashes), "an account without a password would log in with an empty one"
    lines = [json.loads(line) for line in open(os.path.join(root, "var/lib/op-dbus/blockchain/ledger.jsonl"))]
    assert [entry["action"] for entry in lines] == ["install"]
    changes = lines[0]["changes"]
    assert changes["disk"]["backing_file"] == installed["arguments"]["confirm"]
    assert changes["layout"]["uuids"] == installed["first"]["uuids"]
    assert set(changes["images"]) == {"installed vmlinuz", "installed initrd.img"}
    assert installed["first"]["checkpoint"]["size"] == 1


def test_a_second_run_finds_the_install_and_changes_nothing(installed):
    disk_image = installed["arguments"]["confirm"]
    before = sha256_of(disk_image)
    second = run_local_module("opdbus.fleet.opdbus_install", installed["arguments"])
    assert second["changed"] is False and not second.get("failed"), second
    assert second["installed"] == installed["first"]["uuids"]
    assert sha256_of(disk_image) == before
