# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netboot of the test fleet: the installer images, and VMs that boot from the network to their own disk.

The images come from the VM image (vm.py), which is Debian's kernel, systemd-boot and the installer
tools installed into the fleet's root filesystem from Debian packages:

- ``vmlinuz`` and ``initrd.img``: the kernel and the initramfs the installed system boots with;
- ``installer.img``: the same root file system as a zstd-compressed initramfs (newc cpio). The kernel
  unpacks it into memory and runs systemd from it, so the live installer needs no root device. The
  role's ``opdbus-live-keys`` unit, a DHCP network and an empty fstab are added to it.

A netboot VM has OVMF (UEFI), a virtio NIC whose option ROM is iPXE (ipxe-qemu), QEMU's user network
(its DHCP names the menu URL as the boot file; the controller is 10.0.2.2 there) with the VM's SSH
port forwarded to the controller's loopback, and virtio disks with serial numbers, the first of them
first in the boot order: empty, the firmware passes on to the network; installed, it boots from it.
"""

import hashlib
import os
import shutil
import stat
import tempfile

import zstandard

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
ROLE_FILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "roles", "netboot_install", "files")
# Bump when the live additions change, so cached installer images are rebuilt.
INSTALLER_LAYOUT = 1
LIVE_NETWORK = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
# What no test VM uses - kernel modules for graphics, sound, wireless, media and InfiniBand, and the
# documentation - left out of the initramfs so that it loads and unpacks faster under TCG. The
# installed system is copied from it, so it lacks them too.
UNUSED_PATHS = ("usr/share/doc", "usr/share/man", "usr/share/locale")
UNUSED_MODULES = ("kernel/drivers/gpu", "kernel/sound", "kernel/drivers/media", "kernel/drivers/net/wireless",
                  "kernel/drivers/infiniband", "kernel/net/wireless", "kernel/net/mac80211", "kernel/drivers/staging",
                  "kernel/drivers/bluetooth", "kernel/net/bluetooth", "kernel/drivers/iio", "kernel/drivers/hid")
VM_MEMORY_MIB = 3072


class _Cpio:
    """A newc ("070701") archive, the format the kernel unpacks as an initramfs."""

    def __init__(self, stream):
        self.stream = stream
        self.inode = 0x10000

    def _entry(self, name, mode, data=b"", uid=0, gid=0, mtime=0, rdev=0):
        self.inode += 1
        encoded = name.encode("utf-8", "surrogateescape") + b"\0"
        fields = (self.inode, mode, uid, gid, 1, int(mtime), len(data), 0, 0, os.major(rdev), os.minor(rdev),
                  len(encoded), 0)
        header = b"070701" + b"".join(b"%08x" % field for field in fields)
        self.stream.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self.stream.write(data + b"\0" * (-len(data) % 4))

    def add_tree(self, root, skip=()):
        for directory, subdirectories, files in os.walk(root):
            relative = os.path.relpath(directory, root)
            subdirectories[:] = sorted(entry for entry in subdirectories
                                       if os.path.normpath(os.path.join(relative, entry)) not in skip)
            for entry in [""] + sorted(files) + [name for name in subdirectories if os.path.islink(os.path.join(directory, name))]:
                path = os.path.join(directory, entry) if entry else directory
                name = os.path.normpath(os.path.join(relative, entry))
                if name in skip or (not entry and relative == "."):
                    continue
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    data = os.readlink(path).encode("utf-8", "surrogateescape")
                elif stat.S_ISREG(info.st_mode):
                    with open(path, "rb") as handle:
                        data = handle.read()
                elif stat.S_ISDIR(info.st_mode) or stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                    data = b""
                else:
                    continue  # sockets and FIFOs are made at run time
                self._entry(name, info.st_mode, data, info.st_uid, info.st_gid, info.st_mtime, info.st_rdev)

    def add_directory(self, name, mode=0o755):
        self._entry(name, stat.S_IFDIR | mode)

    def add_file(self, name, content, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, content.encode() if isinstance(content, str) else content)

    def add_symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self):
        self._entry("TRAILER!!!", 0)


def _live_additions():
    """{path: (content or symlink target, mode or None for a symlink)} added to the live root."""
    with open(os.path.join(ROLE_FILES, "opdbus-live-keys"), encoding="utf-8") as handle:
        keys_script = handle.read()
    with open(os.path.join(ROLE_FILES, "opdbus-live-keys.service"), encoding="utf-8") as handle:
        keys_unit = handle.read()
    return {
        "init": ("/lib/systemd/systemd", None),
        "etc/fstab": ("", 0o644),
        "etc/hostname": ("opdbus-installer\n", 0o644),
        "etc/systemd/network/80-opdbus-dhcp.network": (LIVE_NETWORK, 0o644),
        "usr/lib/opdbus-live/opdbus-live-keys": (keys_script, 0o644),
        "etc/systemd/system/opdbus-live-keys.service": (keys_unit, 0o644),
        "etc/systemd/system/multi-user.target.wants/opdbus-live-keys.service":
            ("/etc/systemd/system/opdbus-live-keys.service", None),
    }


def installer_key(image):
    """Names the build of IMAGE with the live additions as they are now (the role's files and this code)."""
    digest = hashlib.sha256(f"{image['disk']}:{INSTALLER_LAYOUT}:".encode())
    for path in (os.path.join(ROLE_FILES, "opdbus-live-keys"), os.path.join(ROLE_FILES, "opdbus-live-keys.service"),
                 os.path.abspath(__file__)):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:12]


def ensure_images(image, run, log):
    """The directory with vmlinuz, initrd.img and installer.img of the VM image IMAGE, built on first use
    next to it (about half a minute). The caller holds the cache's lock."""
    directory = os.path.join(os.path.dirname(image["disk"]), f"netboot-{installer_key(image)}")
    if os.path.isdir(directory):
        return directory
    staging = tempfile.mkdtemp(prefix=".netboot-build-", dir=os.path.dirname(image["disk"]))
    mount = os.path.join(staging, "root")
    os.mkdir(mount)
    try:
        log(f"building the netboot installer {directory} (the VM image as an initramfs)")
        run(["mount", "-o", "ro,loop", image["disk"], mount])
        try:
            additions = _live_additions()
            modules = "usr/lib/modules"  # /lib is a link to usr/lib since Debian 12
            skip = set(additions) | {"lost+found", *UNUSED_PATHS} | {
                f"{modules}/{version}/{path}" for version in os.listdir(os.path.join(mount, modules)) for path in UNUSED_MODULES}
            with open(os.path.join(staging, "installer.img"), "wb") as output:
                with zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(output) as compressed:
                    archive = _Cpio(compressed)
                    archive.add_tree(mount, skip)
                    made = set()
                    for path, (content, mode) in additions.items():
                        # The kernel does not make missing parents: a file without its directory is dropped.
                        parents = [os.path.dirname(path)]
                        while os.path.dirname(parents[-1]):
                            parents.append(os.path.dirname(parents[-1]))
                        for parent in reversed(parents):
                            if parent not in made and not os.path.isdir(os.path.join(mount, parent)):
                                archive.add_directory(parent)
                                made.add(parent)
                        if mode is None:
                            archive.add_symlink(path, content)
                        else:
                            archive.add_file(path, content, mode)
                    archive.close()
        finally:
            run(["umount", mount])
        os.rmdir(mount)
        shutil.copyfile(image["kernel"], os.path.join(staging, "vmlinuz"))
        shutil.copyfile(image["initrd"], os.path.join(staging, "initrd.img"))
        os.rename(staging, directory)
    finally:
        if os.path.exists(staging):
            run(["umount", "-l", mount], check=False)
            shutil.rmtree(staging, ignore_errors=True)
    for stale in os.listdir(os.path.dirname(directory)):
        if stale.startswith("netboot-") and stale != os.path.basename(directory):
            shutil.rmtree(os.path.join(os.path.dirname(directory), stale), ignore_errors=True)
    return directory


def qemu_argv(accelerator, firmware_vars, disks, ssh_port, boot_url, mac, console_log):
    """A UEFI VM booting DISKS ([(path, serial)], the first one first) and else from the network (iPXE)."""
    argv = ["qemu-system-x86_64", "-accel", accelerator, "-machine", "q35", "-cpu", "qemu64", "-smp", "2",
            "-m", f"{VM_MEMORY_MIB}M",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={firmware_vars}"]
    for index, (path, serial) in enumerate(disks):
        argv += ["-drive", f"file={path},format=raw,if=none,id=disk{index},cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=disk{index},serial={serial}"
                 + (",bootindex=1" if index == 0 else "")]
    argv += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22,bootfile={boot_url}",
             "-device", f"virtio-net-pci,netdev=net0,mac={mac},bootindex=2",
             "-display", "none", "-serial", f"file:{console_log}", "-monitor", "none", "-nodefaults"]
    return argv
