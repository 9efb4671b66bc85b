# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The task of opdbus_install: install the running (live) system to a disk, in the guide's layout.

Everything is checked before the first write: the disk (disks.refusals), the layout, the keys, the
programs and the boot files with their published checksums. Then the disk is partitioned and
formatted, the subvolumes are created with their compression property and mounted, the source tree
is copied, the ESP gets the kernel, the initramfs and systemd-boot, and the installed system's ledger
starts with an ``install`` entry that records the disk, the layout and the checksums.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shlex
import stat
import tempfile
import time

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec
from ansible_collections.opdbus.fleet.plugins.module_utils._install import layout
from ansible_collections.opdbus.fleet.plugins.module_utils._install.disks import SYS_BLOCK, InstallError, disk_facts, refusals
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import DEFAULT_LEDGER_DIR, Ledger

PROGRAMS = {"sfdisk": "fdisk", "mkfs.fat": "dosfstools", "mkfs.btrfs": "btrfs-progs", "btrfs": "btrfs-progs",
            "wipefs": "util-linux", "blkid": "util-linux", "partx": "util-linux", "mmd": "mtools", "mcopy": "mtools",
            "mount": "mount", "umount": "mount", "tar": "tar"}
SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
# The paths of the source that belong to it alone: its ledger and snapshots, identity, host keys, live boot.
NOT_COPIED = ("./boot/*", f".{layout.OPDBUS_DIR}/*", "./etc/machine-id", "./etc/fstab", "./etc/hostname",
              "./etc/ssh/ssh_host_*", "./root/.ssh/authorized_keys", "./init")
SSHD_DROP_IN = """# Written by opdbus.fleet.opdbus_install: keys only, never a password.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""
PUBLIC_KEY = re.compile(r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                        r" [A-Za-z0-9+/]+={0,3}( .*)?")
PARTITION_WAIT_SECONDS = 10


def install_spec():
    """The options of opdbus_install."""
    return ArgumentSpec(dict(
        disk=dict(type="path", required=True),
        confirm=dict(type="str"),
        allow_wipe=dict(type="bool", default=False),
        authorized_keys=dict(type="list", elements="str", required=True, no_log=False),
        hostname=dict(type="str"),
        profile=dict(type="str"),
        esp_size_mib=dict(type="int", default=512),
        subvolumes=dict(type="list", elements="dict"),
        compression=dict(type="str", default="zstd", choices=list(layout.ALGORITHMS)),
        compression_level=dict(type="int", default=1),
        source=dict(type="path", default="/"),
        target=dict(type="path", default="/mnt/opdbus-target"),
        image_checksums=dict(type="str"),
        kernel_options=dict(type="str", default=""),
    ))


def install_task(params, check_mode, context):
    """opdbus_install; see the module's documentation."""
    installer = Installer(params, context)
    existing = installer.existing_install()
    if existing:
        return {"changed": False, "installed": existing, "disk": installer.facts}
    installer.check()
    if check_mode:
        return {"changed": True, "disk": installer.facts, "plan": installer.plan_summary()}
    return dict(installer.install(), changed=True)


def _read_sysfs_dev(name):
    """MAJOR:MINOR of block device NAME as the kernel knows it, or None."""
    try:
        with open(os.path.join(SYS_BLOCK, name, "dev"), encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _is_block_device(path, number):
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(info.st_mode) and f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}" == number


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Installer:
    """One install: the checks, then the writes, through CONTEXT's programs."""

    def __init__(self, params, context):
        self.params = params
        self.context = context
        self.disk = os.path.realpath(params["disk"])
        self.facts = disk_facts(params["disk"], self._run_quietly)
        self.esp = layout.partition_path(self.disk, 1)
        self.root = layout.partition_path(self.disk, 2)
        self.plan = None
        self.boot_files = None
        self.mounted = []

    # -- running programs
    def _run_quietly(self, argv, data=None):
        # mtools would refuse a FAT file system whose geometry it finds odd, which mkfs.fat's never is.
        return self.context.run(argv, {"LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1"}, data)

    def _run(self, *argv, data=None):
        rc, stdout, stderr = self._run_quietly([str(arg) for arg in argv], data)
        if rc != 0:
            raise InstallError(f"{shlex.join(str(arg) for arg in argv)} failed ({rc}): {(stderr or stdout).strip()}; "
                               f"{self.disk} is partly written: rerun with allow_wipe to start again", rc=rc)
        return stdout

    def _probe(self, device):
        """blkid's low-level probe of DEVICE: {TYPE, UUID, LABEL, PART_ENTRY_NAME, ...}."""
        rc, stdout, _stderr = self._run_quietly(["blkid", "-p", "-o", "export", device])
        return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line) if rc == 0 else {}

    # -- before any write
    def existing_install(self):
        """The op-dbus install already on the disk (its partition names and file systems), or None."""
        if len(self.facts["partitions"]) != 2:
            return None
        esp, root = self._probe(self.esp), self._probe(self.root)
        if (esp.get("PART_ENTRY_NAME"), esp.get("TYPE"), root.get("PART_ENTRY_NAME"), root.get("TYPE")) != \
                (layout.ESP_NAME, "vfat", layout.ROOT_NAME, "btrfs"):
            return None
        return {"btrfs": root.get("UUID"), "esp": esp.get("UUID")}

    def check(self):
        """Raise InstallError with every reason this install cannot go ahead; nothing is written."""
        params = self.params
        reasons = refusals(self.facts, params["confirm"], params["allow_wipe"])
        keys = [key.strip() for key in params["authorized_keys"] if key and key.strip()]
        if not keys:
            reasons.append("no authorized key is given, and an installed system never gets a password: "
                           "set authorized_keys to the SSH public keys that may log in as root")
        reasons += [f"authorized key {key[:40]!r} is not an SSH public key line (TYPE BASE64 [COMMENT])"
                    for key in keys if not PUBLIC_KEY.fullmatch(key)]
        if not 64 <= params["esp_size_mib"] <= 4096:
            reasons.append(f"esp_size_mib {params['esp_size_mib']}: use 64 to 4096 (the guide's is 512)")
        if not 1 <= params["compression_level"] <= 15:
            reasons.append(f"compression_level {params['compression_level']}: zstd takes 1 to 15")
        subvolumes = params["subvolumes"] or layout.guide_subvolumes()
        try:
            self.plan = layout.subvolume_plan(subvolumes, params["compression"])
        except ValueError as error:
            reasons.append(str(error))
        missing = [f"{program} (package {package})" for program, package in PROGRAMS.items()
                   if not self.context.find_program(program)]
        if missing:
            reasons.append(f"missing programs: {', '.join(missing)}")
        reasons += self._check_boot_files()
        if reasons:
            raise InstallError(f"refusing to install to {params['disk']}; nothing was written: {'; '.join(reasons)}",
                               refusals=reasons, disk=self.facts)
        self.keys = keys

    def _check_boot_files(self):
        source = self.params["source"]
        kernels = sorted(glob.glob(os.path.join(source, "boot", "vmlinuz-*")))
        initrds = sorted(glob.glob(os.path.join(source, "boot", "initrd.img-*")))
        if len(kernels) != 1 or len(initrds) != 1:
            return [f"{source}/boot must hold one kernel (vmlinuz-*) and one initramfs (initrd.img-*); "
                    f"found {len(kernels)} and {len(initrds)}"]
        if not os.path.isfile(os.path.join(source, SYSTEMD_BOOT)):
            return [f"{source}/{SYSTEMD_BOOT} is missing: install systemd-boot-efi in the installed image"]
        self.boot_files = {"vmlinuz": kernels[0], "initrd.img": initrds[0]}
        self.checksums = {name: _sha256(path) for name, path in self.boot_files.items()}
        published = layout.parse_sha256sums(self.params["image_checksums"] or "")
        if self.params["image_checksums"] is None:
            return []
        return [f"{path}: sha256 {self.checksums[name]} is not the published {published.get(name, '(none)')} of {name}"
                for name, path in self.boot_files.items() if published.get(name) != self.checksums[name]]

    def plan_summary(self):
        return {"partitions": [{"device": self.esp, "name": layout.ESP_NAME, "size_mib": self.params["esp_size_mib"],
                                "filesystem": "vfat", "mount": layout.ESP_MOUNT},
                               {"device": self.root, "name": layout.ROOT_NAME, "filesystem": "btrfs"}],
                "subvolumes": self.plan, "mount_options": {item["name"]: layout.mount_options(item, self.params["compression_level"])
                                                           for item in self.plan},
                "wipe": [signature["device"] for signature in self.facts["signatures"]],
                "boot_files": {name: os.path.basename(path) for name, path in self.boot_files.items()},
                "checksums": self.checksums}

    # -- the writes
    def install(self):
        params = self.params
        target = params["target"]
        level = params["compression_level"]
        try:
            self._partition_and_format()
            uuids = {"btrfs": self._probe(self.root).get("UUID"), "esp": self._probe(self.esp).get("UUID")}
            self._create_subvolumes()
            for subvolume in self.plan:
                self._mount(self.root, os.path.join(target, subvolume["mount"].lstrip("/")), layout.mount_options(subvolume, level))
            self._copy_system(target)
            self._configure(target, uuids, level)
            self._write_esp(uuids)
            in_effect = self._compression_in_effect(target)
            changes = {"disk": {key: self.facts[key] for key in ("device", "serial", "wwid", "by_id", "backing_file", "size_bytes")},
                       "wiped": list(self.facts["signatures"]),
                       "layout": dict(self.plan_summary(), uuids=uuids, fstab=layout.fstab(uuids["btrfs"], uuids["esp"], self.plan, level)),
                       "compression_in_effect": in_effect, "images": self._image_checksums(),
                       "profile": params["profile"], "hostname": params["hostname"]}
            ledger = Ledger(os.path.join(target, DEFAULT_LEDGER_DIR.lstrip("/")), host=params["hostname"] or None)
            with RecordedRun(ledger, "install") as run:
                entry = run.record(changes)
            self._run("sync")
        finally:
            self._unmount_all()
        return {"disk": self.facts, "uuids": uuids, "compression_in_effect": in_effect, "entry": entry,
                "checkpoint": entry["checkpoint"]}

    def _image_checksums(self):
        published = layout.parse_sha256sums(self.params["image_checksums"] or "")
        return dict(published, **{f"installed {name}": digest for name, digest in self.checksums.items()})

    def _partition_and_format(self):
        if self.facts["signatures"]:  # allowed, or check() would have refused
            for member in self.facts["partitions"] + [self.disk]:
                self._run("wipefs", "--all", "--quiet", member)
        self._run("sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always", self.disk,
                  data=layout.sfdisk_script(self.params["esp_size_mib"]))
        self._wait_for_partitions()
        if self.context.find_program("udevadm"):
            self._run_quietly(["udevadm", "settle", "--timeout=10"])
        self._run("mkfs.fat", "-F", "32", "-n", "OPDBUS-ESP", self.esp)
        self._run("mkfs.btrfs", "--quiet", "--force", "--label", layout.ROOT_NAME, self.root)

    def _wait_for_partitions(self):
        """Until the kernel knows both partitions and their device nodes exist. Where it has not read the
        new table after a second (loop devices on some kernels ignore the re-read sfdisk asks for), the
        partitions are added one by one (partx, BLKPG)."""
        names = [os.path.basename(self.esp), os.path.basename(self.root)]
        started = time.monotonic()
        reread = False
        while True:
            numbers = [_read_sysfs_dev(name) for name in names]
            if all(numbers) and all(_is_block_device(path, number) for path, number in zip((self.esp, self.root), numbers)):
                return
            if time.monotonic() - started > PARTITION_WAIT_SECONDS:
                raise InstallError(f"the partitions of {self.disk} did not appear within {PARTITION_WAIT_SECONDS} s")
            if not reread and not all(numbers) and time.monotonic() - started > 1:
                self._run_quietly(["partx", "--add", self.disk])
                reread = True
            time.sleep(0.1)

    def _create_subvolumes(self):
        top = tempfile.mkdtemp(prefix="opdbus-install-top-")
        try:
            self._mount(self.root, top, "subvolid=5")
            for subvolume in self.plan:
                path = os.path.join(top, subvolume["name"])
                self._run("btrfs", "-q", "subvolume", "create", path)
                self._run("btrfs", "property", "set", path, "compression", subvolume["compression"])
        finally:
            self._unmount_all()
            os.rmdir(top)

    def _mount(self, device, path, options):
        os.makedirs(path, exist_ok=True)
        self._run("mount", "-o", options, device, path)
        self.mounted.append(path)

    def _unmount_all(self):
        while self.mounted:
            self._run_quietly(["umount", self.mounted.pop()])

    def _copy_system(self, target):
        source = self.params["source"]
        excludes = " ".join(f"--exclude={shlex.quote(path)}" for path in NOT_COPIED)
        self._run("sh", "-c", f"tar -C {shlex.quote(source)} --one-file-system --xattrs --acls --numeric-owner {excludes} "
                              f"-cf - . | tar -C {shlex.quote(target)} --xattrs --acls --numeric-owner -xpf -")

    def _configure(self, target, uuids, level):
        params = self.params

        def write(relative, content, mode=0o644):
            path = os.path.join(target, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(content)
            os.chmod(path, mode)

        write("etc/fstab", layout.fstab(uuids["btrfs"], uuids["esp"], self.plan, level))
        write("etc/machine-id", "uninitialized\n", 0o444)  # the first boot makes the machine's own
        if params["hostname"]:
            write("etc/hostname", params["hostname"] + "\n")
        write("root/.ssh/authorized_keys", "".join(key + "\n" for key in self.keys), 0o600)
        os.chmod(os.path.join(target, "root/.ssh"), 0o700)
        write("etc/ssh/sshd_config.d/10-opdbus-keys-only.conf", SSHD_DROP_IN)
        self._lock_passwords(os.path.join(target, "etc/shadow"))

    def _write_esp(self, uuids):
        """systemd-boot, its entry and the boot files, written into the FAT file system with mtools: the
        ESP need not be mounted, so an install also works where the running kernel has no vfat."""
        root_subvolume = next(item["name"] for item in self.plan if item["mount"] == "/")
        entry, loader_conf = layout.boot_entry(os.path.basename(self.boot_files["vmlinuz"]),
                                               os.path.basename(self.boot_files["initrd.img"]),
                                               uuids["btrfs"], root_subvolume, self.params["kernel_options"])
        image = ["-i", self.esp]
        self._run("mmd", *image, "::/EFI", "::/EFI/BOOT", "::/EFI/systemd", "::/loader", "::/loader/entries")
        loader = os.path.join(self.params["source"], SYSTEMD_BOOT)
        self._run("mcopy", *image, loader, "::/EFI/BOOT/BOOTX64.EFI")
        self._run("mcopy", *image, loader, "::/EFI/systemd/systemd-bootx64.efi")
        for path in self.boot_files.values():
            self._run("mcopy", *image, path, f"::/{os.path.basename(path)}")
        with tempfile.TemporaryDirectory(prefix="opdbus-install-esp-") as scratch:
            for name, text in (("opdbus.conf", entry), ("loader.conf", loader_conf)):
                with open(os.path.join(scratch, name), "w", encoding="utf-8") as handle:
                    handle.write(text)
            self._run("mcopy", *image, os.path.join(scratch, "opdbus.conf"), "::/loader/entries/opdbus.conf")
            self._run("mcopy", *image, os.path.join(scratch, "loader.conf"), "::/loader/loader.conf")

    @staticmethod
    def _lock_passwords(shadow):
        """Lock every password the image carries: the installed system is reached with keys only."""
        with open(shadow, encoding="utf-8") as handle:
            rows = [line.split(":") for line in handle.read().splitlines()]
        for row in rows:
            if len(row) > 1 and not row[1].startswith(("!", "*")):  # an empty field logs in without a password
                row[1] = "!" + row[1]
        with open(shadow, "w", encoding="utf-8") as handle:
            handle.write("".join(":".join(row) + "\n" for row in rows))
        os.chmod(shadow, 0o640)

    def _compression_in_effect(self, target):
        """{mount point: {mount_option, property}} as the kernel reports them now."""
        with open("/proc/mounts", encoding="utf-8") as handle:
            mounts = {fields[1]: fields[3] for fields in (line.split() for line in handle) if fields[2] == "btrfs"}
        in_effect = {}
        for subvolume in self.plan:
            path = os.path.normpath(os.path.join(target, subvolume["mount"].lstrip("/")))
            options = dict(option.partition("=")[::2] for option in mounts.get(path, "").split(","))
            value = self._run("btrfs", "property", "get", path, "compression").strip()
            in_effect[subvolume["mount"]] = {"subvolume": subvolume["name"], "mount_option": options.get("compress"),
                                             "property": value.partition("=")[2] or "none"}
        return in_effect
