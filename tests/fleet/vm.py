# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Virtual-machine hosts of the test fleet: QEMU with a real kernel, where a container cannot show what
a test needs (several NUMA nodes with their distances; later boot and disks).

A VM boots the fleet's cached root filesystem with Debian's kernel installed into it, directly
(``-kernel``/``-initrd``), from a copy-on-write disk over one cached image. Its address, host name
and the fleet's SSH key reach it on the kernel command line, where a unit in the image applies them
before the network and sshd start; so one image serves every VM of every fleet.

Nested KVM on the machines we test on does not boot a kernel, so VMs run under TCG unless a quick
probe (choose_accelerator) shows that KVM boots one here.
"""

import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

KERNEL_PACKAGE = "linux-image-amd64"
# What an installer needs besides the kernel: systemd-boot's EFI binary, mkfs.fat, mtools and sfdisk.
INSTALLER_PACKAGES = ("systemd-boot-efi", "dosfstools", "mtools", "fdisk")
# Bump when the image's content (setup unit, fstab, packages) changes, so cached images are rebuilt.
IMAGE_LAYOUT = 2
IMAGE_SIZE = "3G"
TCG = "tcg,thread=multi"
KVM = "kvm"
# A kernel under working KVM prints its banner in well under a second; nested KVM here prints nothing.
KVM_PROBE_SECONDS = 10
DEFAULT_NODE_MEMORY_MIB = 512

NumaTopology = collections.namedtuple("NumaTopology", "nodes cpus_per_node memory_mib devices")
_NUMA_SPEC = re.compile(r"^(?P<nodes>[1-8])x(?P<cpus>[1-4])(?::(?P<memory>\d+)M)?(?P<devices>(,(nic|nvme)@\d)*)$")
NVME_SIZE = "64M"

GUEST_SETUP = r"""#!/bin/sh
# Applies what tests/fleet/fleet.py put on the kernel command line: address, host name, SSH key.
set -eu
for word in $(cat /proc/cmdline); do
    case "$word" in
        fleet.address=*) address=${word#*=} ;;
        fleet.mac=*) mac=${word#*=} ;;
        fleet.hostname=*) name=${word#*=} ;;
        fleet.key=*) key=${word#*=} ;;
    esac
done
[ -n "${name:-}" ] || exit 0  # booted as something else than a fleet VM (the netboot installer)
echo "$name" > /etc/hostname
hostname "$name"
mkdir -p /run/systemd/network
printf '[Match]\nMACAddress=%s\n\n[Network]\nAddress=%s\nLinkLocalAddressing=no\n' "$mac" "$address" \
    > /run/systemd/network/10-fleet.network
mkdir -p /root/.ssh
echo "$key" | base64 -d > /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
"""

GUEST_SETUP_UNIT = """[Unit]
Description=Apply the test fleet's address, host name and SSH key from the kernel command line
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target systemd-networkd.service ssh.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fleet-vm-setup
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
"""


def parse_numa(spec):
    """NODESxCPUS[:MEMORYM][,nic@NODE][,nvme@NODE]..., e.g. 2x1 (2 nodes of 1 CPU) or 4x1:768M,nic@3,nvme@1
    (a virtio NIC on node 3 and an NVMe disk on node 1), as a NumaTopology."""
    match = _NUMA_SPEC.match(spec or "")
    if not match:
        raise ValueError(f"NUMA topology {spec!r}: use NODESxCPUS[:MEMORYM][,nic@NODE][,nvme@NODE], e.g. 2x1, "
                         "4x1:768M or 4x1,nic@3,nvme@1 (1-8 nodes, 1-4 CPUs and at least 256 MiB per node)")
    nodes = int(match.group("nodes"))
    memory = int(match.group("memory") or DEFAULT_NODE_MEMORY_MIB)
    if memory < 256:
        raise ValueError(f"NUMA topology {spec!r}: a node needs at least 256 MiB")
    devices = tuple((kind, int(node)) for kind, node in
                    (device.split("@") for device in match.group("devices").split(",") if device))
    outside = [f"{kind}@{node}" for kind, node in devices if node >= nodes]
    if outside:
        raise ValueError(f"NUMA topology {spec!r}: {', '.join(outside)} names a node the VM does not have")
    return NumaTopology(nodes, int(match.group("cpus")), memory, devices)


def distances(nodes):
    """The SLIT distance matrix QEMU is given: 10 to itself, 20 to a neighbour on a ring, 10 more per hop."""
    return [[10 if source == target else 10 + 10 * min(abs(source - target), nodes - abs(source - target))
             for target in range(nodes)] for source in range(nodes)]


def qemu_argv(image, topology, tap, mac, kernel_cmdline, console_log, nvme_disks=(), accelerator=TCG):
    """The command line of one VM: its NUMA nodes with their memory, CPUs and distances, disk and NIC,
    and each of the topology's devices behind a PCIe root bus of its node (pxb-pcie; NVME_DISKS are the
    backing files of its NVMe devices, in order)."""
    cpus = topology.nodes * topology.cpus_per_node
    argv = ["qemu-system-x86_64", "-accel", accelerator, "-machine", "q35", "-cpu", "qemu64",
            "-m", f"{topology.nodes * topology.memory_mib}M",
            "-smp", f"{cpus},sockets={topology.nodes},cores={topology.cpus_per_node},threads=1"]
    for node in range(topology.nodes):
        first = node * topology.cpus_per_node
        argv += ["-object", f"memory-backend-ram,id=mem{node},size={topology.memory_mib}M",
                 "-numa", f"node,nodeid={node},cpus={first}-{first + topology.cpus_per_node - 1},memdev=mem{node}"]
    matrix = distances(topology.nodes)
    for source in range(topology.nodes):
        for target in range(topology.nodes):
            if source != target:
                argv += ["-numa", f"dist,src={source},dst={target},val={matrix[source][target]}"]
    argv += ["-kernel", image["kernel"], "-initrd", image["initrd"], "-append", kernel_cmdline,
             # On the main root bus by name: QEMU would put a device without a bus on the last pxb-pcie.
             "-drive", f"file={image['disk']},format=qcow2,if=none,id=root,cache=unsafe",
             "-device", "virtio-blk-pci,drive=root,bus=pcie.0",
             "-netdev", f"tap,id=fleet,ifname={tap},script=no,downscript=no",
             "-device", f"virtio-net-pci,netdev=fleet,mac={mac},bus=pcie.0",
             "-display", "none", "-serial", f"file:{console_log}", "-monitor", "none", "-nodefaults"]
    disks = iter(nvme_disks)
    for index, (kind, node) in enumerate(topology.devices):
        bus, port = f"numa-bus{index}", f"numa-port{index}"
        argv += ["-device", f"pxb-pcie,id={bus},bus_nr={32 + 16 * index},numa_node={node},bus=pcie.0",
                 "-device", f"pcie-root-port,id={port},bus={bus},chassis={index + 1}"]
        if kind == "nic":  # a NIC only to be placed near: user networking, reaching nothing
            argv += ["-netdev", f"user,id=numa-net{index},restrict=on",
                     "-device", f"virtio-net-pci,netdev=numa-net{index},bus={port}"]
        else:
            argv += ["-drive", f"file={next(disks)},format=raw,if=none,id=numa-disk{index}",
                     "-device", f"nvme,drive=numa-disk{index},serial=fleet-nvme{index},bus={port}"]
    return argv


def choose_accelerator(kernel, cache_dir, log):
    """TCG, or KVM where it boots KERNEL: the probe starts it without a root file system under KVM and
    waits up to KVM_PROBE_SECONDS for its banner on the serial console. The verdict is cached per
    kernel and QEMU; OPDBUS_VM_ACCEL=tcg|kvm overrides it."""
    forced = os.environ.get("OPDBUS_VM_ACCEL")
    if forced in ("tcg", "kvm"):
        return TCG if forced == "tcg" else KVM
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        log("accelerator: TCG (no usable /dev/kvm)")
        return TCG
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(f"{kernel}:{os.path.getmtime(kernel)}:{qemu}".encode()).hexdigest()[:12]
    verdict_file = os.path.join(cache_dir, f"kvm-probe-{key}")
    if not os.path.exists(verdict_file):
        verdict = "kvm" if _kvm_boots(kernel) else "tcg"
        with open(verdict_file, "w", encoding="utf-8") as handle:
            handle.write(verdict)
    with open(verdict_file, encoding="utf-8") as handle:
        verdict = handle.read().strip()
    log(f"accelerator: {verdict.upper()} (KVM probe: {'the kernel booted' if verdict == 'kvm' else f'no kernel output within {KVM_PROBE_SECONDS} s'}; "
        f"cached in {verdict_file})")
    return KVM if verdict == "kvm" else TCG


def _kvm_boots(kernel):
    with tempfile.TemporaryDirectory(prefix="opdbus-kvm-probe-") as directory:
        console = os.path.join(directory, "console")
        process = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256M", "-kernel", kernel,
             "-append", "console=ttyS0 panic=-1", "-no-reboot", "-display", "none", "-nodefaults",
             "-serial", f"file:{console}", "-monitor", "none"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + KVM_PROBE_SECONDS
            while time.monotonic() < deadline and process.poll() is None:
                with open(console, "rb") if os.path.exists(console) else open(os.devnull, "rb") as handle:
                    if b"Linux version" in handle.read():
                        return True
                time.sleep(0.2)
            return False
        finally:
            process.kill()
            process.wait()


def image_key(rootfs):
    return json.dumps({"rootfs": os.path.basename(rootfs), "kernel": KERNEL_PACKAGE, "packages": INSTALLER_PACKAGES,
                       "layout": IMAGE_LAYOUT})


def ensure_image(rootfs, cache_dir, run, log):
    """The cached VM image of ROOTFS ({disk, kernel, initrd}), built on first use (about a minute).

    The caller holds the cache's lock."""
    key = hashlib.sha256(image_key(rootfs).encode()).hexdigest()[:12]
    directory = os.path.join(cache_dir, f"vm-{key}")
    image = {"disk": os.path.join(directory, "root.raw"), "kernel": os.path.join(directory, "vmlinuz"),
             "initrd": os.path.join(directory, "initrd.img")}
    if os.path.isdir(directory):
        return image
    staging = tempfile.mkdtemp(prefix=".vm-build-", dir=cache_dir)
    root = os.path.join(staging, "root")
    mounted = []
    try:
        log(f"building VM image {directory} ({KERNEL_PACKAGE} into the root filesystem; about a minute, cached afterwards)")
        run(["cp", "-a", rootfs, root])
        shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
        for name in ("proc", "sys", "dev"):
            run(["mount", "--bind", f"/{name}", os.path.join(root, name)])
            mounted.append(os.path.join(root, name))
        run(["chroot", root, "sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
             f"apt-get install -y -q --no-install-recommends {KERNEL_PACKAGE} {' '.join(INSTALLER_PACKAGES)} && apt-get clean "
             "&& rm -rf /var/lib/apt/lists && mkdir -p /var/lib/apt/lists/partial"])
        for path in reversed(mounted):
            run(["umount", path])
        mounted.clear()
        _customise_image(root)
        boot = os.path.join(root, "boot")
        (kernel,) = [name for name in os.listdir(boot) if name.startswith("vmlinuz-")]
        (initrd,) = [name for name in os.listdir(boot) if name.startswith("initrd.img-")]
        shutil.copyfile(os.path.join(boot, kernel), os.path.join(staging, "vmlinuz"))
        shutil.copyfile(os.path.join(boot, initrd), os.path.join(staging, "initrd.img"))
        run(["mkfs.ext4", "-q", "-F", "-L", "fleet-vm", "-d", root, os.path.join(staging, "root.raw"), IMAGE_SIZE])
        shutil.rmtree(root)
        os.rename(staging, directory)
    finally:
        for path in reversed(mounted):
            run(["umount", "-l", path], check=False)
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)
    for stale in os.listdir(cache_dir):
        if stale.startswith("vm-") and os.path.join(cache_dir, stale) != directory:
            shutil.rmtree(os.path.join(cache_dir, stale), ignore_errors=True)
    return image


def _customise_image(root):
    def write(relative, content, mode=0o644):
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(path, mode)

    write("usr/local/sbin/fleet-vm-setup", GUEST_SETUP, 0o755)
    write("etc/systemd/system/fleet-vm-setup.service", GUEST_SETUP_UNIT)
    wants = os.path.join(root, "etc/systemd/system/sysinit.target.wants")
    os.makedirs(wants, exist_ok=True)
    os.symlink("/etc/systemd/system/fleet-vm-setup.service", os.path.join(wants, "fleet-vm-setup.service"))
    # The container hosts get their address from outside; a VM configures its own, with networkd.
    networkd = os.path.join(root, "etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    if not os.path.lexists(networkd):
        os.symlink("/lib/systemd/system/systemd-networkd.service", networkd)
    write("etc/fstab", "LABEL=fleet-vm / ext4 rw,noatime 0 1\n")
    with open(os.path.join(root, "etc/resolv.conf"), "w", encoding="utf-8"):
        pass  # test hosts resolve nothing
