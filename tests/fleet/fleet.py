# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A local fleet of real systemd hosts for tests, Molecule, the demo and benchmarks.

Each host is a Debian root filesystem booted with ``systemd-nspawn -b`` (real PID 1, real system
bus), in its own network namespace joined to a per-fleet bridge, reachable as root over SSH with a
key made for the run. Hosts share one cached, read-only root filesystem through
``--volatile=overlay``. A host can be given a freshly formatted BTRFS filesystem on a loop device,
bound in at ``/mnt/btrfs``. ``up --vm HOST --numa SPEC`` adds QEMU virtual machines with a real
kernel and the NUMA topology SPEC to the fleet (see vm.py), on the same bridge and inventory.
``serve`` publishes a controller directory to the hosts over HTTP with nginx on the fleet's gateway
address, and its git repositories with ``git daemon`` (hosts reach no package registry, so whatever
they install comes from there).

Everything a fleet creates is named after the fleet (netns ``opdbus-NAME-HOST``, bridge
``ofb-NAME``, veths ``ofv-NAME-N``, VM taps ``oft-NAME-N``, files under ``RUN_ROOT/NAME``), so ``down`` can sweep it all
away from the names alone, even when the run that created it crashed and left no state behind.

This is the one implementation used by the Makefile, pytest fixtures and Molecule; run
``fleet.py --help`` for the command line.
"""

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib

import netboot
import vm

SUITE = "bookworm"
# What every test host has: systemd with a system bus, the target-side Python libraries the
# collection's modules use, btrfs-progs, and sshd for Ansible.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "dbus-user-session",
    "python3",
    "python3-dbus",
    "python3-zstandard",
    # debootstrap does not resolve virtual packages; python3-zstandard needs the cffi backend.
    "python3-cffi-backend",
    "python3-jmespath",
    "btrfs-progs",
    "openssh-server",
    "procps",
    # What the profile roles declare active (installed here: test hosts reach no package registry), and
    # the apt bindings ansible.builtin.package needs to see that they are installed.
    "network-manager",
    "bluez",
    "python3-apt",
    # What the pull role needs on a laptop: git for ansible-pull, venv (with its bundled pip) for ansible-core.
    "git",
    "python3-venv",
)
# Bump when the customisation in _customise_rootfs changes, so cached root filesystems are rebuilt.
ROOTFS_LAYOUT = 3

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_DIR = os.environ.get("OPDBUS_FLEET_CACHE", "/var/cache/opdbus-fleet")
RUN_ROOT = os.environ.get("OPDBUS_FLEET_RUN", "/run/opdbus-fleet")
BTRFS_MOUNT_IN_HOST = "/mnt/btrfs"
REQUIRED_TOOLS = {
    # tool: Debian package that provides it (the Makefile's `deps` target installs them all)
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "mkfs.btrfs": "btrfs-progs",
    "losetup": "mount",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
SERVE_TOOLS = {"nginx": "nginx", "git": "git"}
VM_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "mkfs.ext4": "e2fsprogs"}
# A VM under TCG on two busy cores boots in about 30 s; this leaves room for a loaded machine.
VM_BOOT_TIMEOUT = 240
# Host keys are new on every boot, so they are neither checked nor remembered.
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,7}$")


class FleetError(Exception):
    """A failure with a message that tells the user what to do."""


def log(message):
    print(f"fleet: {message}", file=sys.stderr, flush=True)


def run(argv, check=True, capture=True, **kwargs):
    result = subprocess.run(argv, text=True, capture_output=capture, check=False, **kwargs)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else ""
        raise FleetError(f"{' '.join(argv)} failed with exit code {result.returncode}: {detail}")
    return result


def preflight(tools=None):
    """Fail with one line per problem before anything is created."""
    if os.geteuid() != 0:
        raise FleetError(
            "the test fleet needs root (systemd-nspawn, network namespaces, loop devices); "
            "run the integration stages as root"
        )
    missing = [f"{tool} (Debian package {package})" for tool, package in (tools or REQUIRED_TOOLS).items()
               if shutil.which(tool) is None]
    if missing:
        raise FleetError(f"missing {', '.join(missing)}; `make deps` installs them")


# --------------------------------------------------------------------------- root filesystem

def rootfs_key():
    spec = json.dumps({"suite": SUITE, "packages": sorted(PACKAGES), "layout": ROOTFS_LAYOUT})
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def rootfs_path():
    return os.path.join(CACHE_DIR, f"{SUITE}-{rootfs_key()}")


def ensure_rootfs():
    """Return the cached root filesystem, building it with debootstrap on first use."""
    path = rootfs_path()
    if os.path.isdir(path):
        return path
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(os.path.join(CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(path):  # another process built it while we waited
            return path
        staging = tempfile.mkdtemp(prefix=".build-", dir=CACHE_DIR)
        try:
            log(f"building root filesystem {path} with debootstrap (about 80 s, cached afterwards)")
            started = time.monotonic()
            argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, staging]
            mirror = os.environ.get("OPDBUS_FLEET_MIRROR")
            if mirror:
                argv.append(mirror)
            result = run(argv, check=False)
            if result.returncode != 0:
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                raise FleetError(f"debootstrap failed (exit {result.returncode}):\n{tail}")
            _customise_rootfs(staging)
            os.rename(staging, path)
            log(f"root filesystem built in {time.monotonic() - started:.0f} s")
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging, ignore_errors=True)
        for stale in os.listdir(CACHE_DIR):
            if stale.startswith(f"{SUITE}-") and os.path.join(CACHE_DIR, stale) != path:
                shutil.rmtree(os.path.join(CACHE_DIR, stale), ignore_errors=True)
    return path


def ensure_vm_image(rootfs):
    """The cached VM image of ROOTFS (vm.ensure_image), under the cache's lock."""
    with open(os.path.join(CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return vm.ensure_image(rootfs, CACHE_DIR, run, log)


def ensure_netboot_images():
    """The directory with the netboot installer's vmlinuz, initrd.img and installer.img (netboot.py)."""
    image = ensure_vm_image(ensure_rootfs())
    with open(os.path.join(CACHE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return netboot.ensure_images(image, run, log)


def _write(path, content, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(content)
    os.chmod(path, mode)


def _customise_rootfs(root):
    # Distinct identities per host: systemd derives the machine id from nspawn's --uuid when
    # /etc/machine-id is empty, and sshd host keys are generated at first start, not shared.
    _write(os.path.join(root, "etc/machine-id"), "")
    for shared in ("var/lib/dbus/machine-id", "etc/hostname"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, shared))
    ssh_dir = os.path.join(root, "etc/ssh")
    for name in os.listdir(ssh_dir):
        if name.startswith("ssh_host_"):
            os.unlink(os.path.join(ssh_dir, name))
    _write(
        os.path.join(root, "etc/systemd/system/ssh.service.d/host-keys.conf"),
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n",
    )
    _write(os.path.join(root, "etc/ssh/sshd_config.d/fleet.conf"), "UseDNS no\nPermitRootLogin prohibit-password\n")
    os.makedirs(os.path.join(root, "root/.ssh"), mode=0o700, exist_ok=True)
    # Nothing to do for these in a container; they only slow the boot down or fail noisily.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
                 "systemd-networkd-wait-online.service"):
        link = os.path.join(root, "etc/systemd/system", unit)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink("/dev/null", link)
    # Installed for the profile roles, off until a role turns them on; NetworkManager then manages no
    # interface, so the fleet network (host0) stays as the fleet tool set it up.
    for directory, wanted in (("etc/systemd/system/multi-user.target.wants", "NetworkManager.service"),
                              ("etc/systemd/system/network-online.target.wants", "NetworkManager-wait-online.service"),
                              ("etc/systemd/system/bluetooth.target.wants", "bluetooth.service"),
                              ("etc/systemd/system", "dbus-org.freedesktop.nm-dispatcher.service"),
                              ("etc/systemd/system", "dbus-org.bluez.service")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, directory, wanted))
    _write(os.path.join(root, "etc/NetworkManager/conf.d/fleet.conf"),
           "[keyfile]\nunmanaged-devices=*\n[main]\ndns=none\n")
    shutil.rmtree(os.path.join(root, "var/lib/apt/lists"), ignore_errors=True)
    os.makedirs(os.path.join(root, "var/lib/apt/lists/partial"), exist_ok=True)
    archives = os.path.join(root, "var/cache/apt/archives")
    for name in os.listdir(archives):
        if name.endswith(".deb"):
            os.unlink(os.path.join(archives, name))


# --------------------------------------------------------------------------- Ansible

def ansible_environment(**extra):
    """The environment of every Ansible run against a fleet: tests/ansible.cfg and the collection in build/."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "tests", "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_ROOT, "build"), ANSIBLE_NOCOLOR="1")
    env.update(extra)
    return env


def ansible_command(program):
    """Path of an Ansible command next to the running Python (the project's virtualenv)."""
    return os.path.join(os.path.dirname(sys.executable), program)


# --------------------------------------------------------------------------- the fleet

class Fleet:
    """A named set of hosts. Its state lives in RUN_ROOT/NAME/state.json."""

    def __init__(self, name="opdbus"):
        if not NAME_PATTERN.match(name):
            raise FleetError(f"fleet name {name!r} must be 1-8 lowercase letters or digits, starting with a letter")
        self.name = name
        self.run_dir = os.path.join(RUN_ROOT, name)
        self.bridge = f"ofb-{name}"
        # A /24 per fleet name so that fleets of different names can run side by side.
        self.subnet_octet = 20 + zlib.crc32(name.encode()) % 200
        self.gateway = f"10.213.{self.subnet_octet}.1"

    # ---- paths and state
    @property
    def state_file(self):
        return os.path.join(self.run_dir, "state.json")

    @property
    def inventory_file(self):
        return os.path.join(self.run_dir, "inventory.yml")

    @property
    def vm_dir(self):
        return os.path.join(self.run_dir, "vm")

    @property
    def key_file(self):
        return os.path.join(self.run_dir, "id_ed25519")

    def state(self):
        try:
            with open(self.state_file) as handle:
                return json.load(handle)
        except FileNotFoundError:
            raise FleetError(f"fleet {self.name!r} is not up (no {self.state_file}); run `fleet.py up` first") from None

    def hosts(self):
        return self.state()["hosts"]

    def netns(self, host):
        return f"opdbus-{self.name}-{host}"

    # ---- up
    def up(self, count=3, btrfs=(), btrfs_size="512M", prefix="node", boot_timeout=60, vms=None):
        """Boot COUNT container hosts and the virtual machines VMS ({host: NUMA spec}); BTRFS is the
        list of container host names (or ["all"]) given a BTRFS mount."""
        vms = dict(vms or {})
        preflight(dict(REQUIRED_TOOLS, **VM_TOOLS) if vms else REQUIRED_TOOLS)
        if os.path.exists(self.state_file):
            raise FleetError(f"fleet {self.name!r} is already up; run `fleet.py down --name {self.name}` first")
        if not 0 <= count + len(vms) <= 50 or count < 0:
            raise FleetError("a fleet has up to 50 hosts (none, for one whose VMs boot from the network)")
        try:
            topologies = {host: vm.parse_numa(spec) for host, spec in vms.items()}
        except ValueError as exc:
            raise FleetError(str(exc)) from None
        root = ensure_rootfs()
        image = ensure_vm_image(root) if vms else None
        accelerator = vm.choose_accelerator(image["kernel"], CACHE_DIR, log) if vms else None
        self.down(quiet=True)  # residue of a crashed run with this name
        os.makedirs(self.run_dir, mode=0o700)
        names = [f"{prefix}{index}" for index in range(1, count + 1)]
        clashing = [host for host in vms if host in names or not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", host)]
        if clashing:
            raise FleetError(f"VM names {', '.join(clashing)}: use lowercase letters, digits and '-', other than "
                             f"the container hosts' {prefix}1..{prefix}{count}")
        btrfs_hosts = set(names) if "all" in btrfs else set(btrfs)
        unknown = btrfs_hosts - set(names)
        if unknown:
            raise FleetError(f"--btrfs names unknown hosts: {', '.join(sorted(unknown))} (hosts are {', '.join(names)})")
        state = {"name": self.name, "rootfs": root, "bridge": self.bridge, "hosts": {}}
        started = time.monotonic()
        try:
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"opdbus-fleet-{self.name}", "-f", self.key_file])
            shutil.copyfile(self.key_file + ".pub", os.path.join(self.run_dir, "authorized_keys"))
            os.chmod(os.path.join(self.run_dir, "authorized_keys"), 0o600)
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
            for index, host in enumerate(names, start=1):
                state["hosts"][host] = self._start_host(root, host, index, host in btrfs_hosts, btrfs_size)
                self._save(state)
            for index, (host, topology) in enumerate(topologies.items(), start=count + 1):
                state["hosts"][host] = self._start_vm(image, accelerator, host, index, topology)
                self._save(state)
            self._write_inventory(state)
            for host, info in state["hosts"].items():
                self._wait_ready(host, info, VM_BOOT_TIMEOUT if "numa" in info else boot_timeout)
        except BaseException:
            self.down(quiet=True)
            raise
        state["boot_seconds"] = round(time.monotonic() - started, 1)
        self._save(state)
        return state

    def _save(self, state):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=2)
        os.replace(tmp, self.state_file)

    def _start_host(self, root, host, index, with_btrfs, btrfs_size):
        netns = self.netns(host)
        veth = f"ofv-{self.name}-{index}"
        address = f"10.213.{self.subnet_octet}.{10 + index}"
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", netns, "link", "set", "eth0", "up"])
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        info = {"address": address, "netns": netns, "veth": veth, "machine_uuid": str(uuid.uuid4())}
        binds = [f"--bind-ro={os.path.join(self.run_dir, 'authorized_keys')}:/root/.ssh/authorized_keys"]
        if with_btrfs:
            info["btrfs"] = self._make_btrfs(host, btrfs_size)
            binds.append(f"--bind={info['btrfs']['mount']}:{BTRFS_MOUNT_IN_HOST}")
        console = open(os.path.join(self.run_dir, f"{host}.console.log"), "w")
        process = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--console=passive",
             "-D", root, "--volatile=overlay", f"--network-namespace-path=/run/netns/{netns}",
             "-b", "-M", host, f"--uuid={info['machine_uuid']}", f"--hostname={host}", *binds,
             "--", "systemd.firstboot=off"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
        )
        console.close()
        info["pid"] = process.pid
        return info

    def _start_vm(self, image, accelerator, host, index, topology):
        tap = f"oft-{self.name}-{index}"
        address = f"10.213.{self.subnet_octet}.{10 + index}"
        mac = f"52:54:00:{self.subnet_octet:02x}:{index // 256:02x}:{index % 256:02x}"
        os.makedirs(self.vm_dir, mode=0o700, exist_ok=True)
        disk = os.path.join(self.vm_dir, f"{host}.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image["disk"], disk])
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        run(["ip", "link", "set", tap, "master", self.bridge, "up"])
        with open(self.key_file + ".pub", "rb") as handle:
            key = base64.b64encode(handle.read().strip()).decode()
        cmdline = (f"root=LABEL=fleet-vm rw console=ttyS0 quiet systemd.firstboot=off fleet.hostname={host} "
                   f"fleet.address={address}/24 fleet.mac={mac} fleet.key={key}")
        console_log = os.path.join(self.run_dir, f"{host}.console.log")
        nvme_disks = [os.path.join(self.vm_dir, f"{host}.nvme{index}.img")
                      for index, (kind, _node) in enumerate(topology.devices) if kind == "nvme"]
        for path in nvme_disks:
            run(["truncate", "-s", vm.NVME_SIZE, path])
        argv = vm.qemu_argv(dict(image, disk=disk), topology, tap, mac, cmdline, console_log, nvme_disks, accelerator)
        qemu_log = open(os.path.join(self.vm_dir, f"{host}.qemu.log"), "w")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_log,
                                   start_new_session=True)
        qemu_log.close()
        log(f"{host}: QEMU ({accelerator.split(',', maxsplit=1)[0]}) with {topology.nodes} NUMA nodes x "
            f"{topology.cpus_per_node} CPUs x {topology.memory_mib} MiB")
        return {"address": address, "pid": process.pid, "tap": tap, "mac": mac, "disk": disk,
                "accelerator": accelerator.split(",", maxsplit=1)[0], "numa": topology._asdict(), "distances": vm.distances(topology.nodes)}

    def start_netboot_vm(self, host, disks, boot_url, ssh_port):
        """Start HOST, a UEFI VM that boots from its first disk or else from BOOT_URL through iPXE, with its
        SSH port forwarded to 127.0.0.1:SSH_PORT. DISKS ([(file, serial)]) must be in this fleet's VM
        directory, so that ``down`` finds the VM by them. Returns once QEMU runs; nothing waits for SSH."""
        state = self.state()
        if host in state["hosts"]:
            raise FleetError(f"fleet {self.name!r} already has a host {host!r}")
        preflight(VM_TOOLS)
        if not os.path.exists(netboot.OVMF_CODE):
            raise FleetError(f"missing {netboot.OVMF_CODE} (Debian package ovmf); `make deps` installs it")
        os.makedirs(self.vm_dir, mode=0o700, exist_ok=True)
        outside = [path for path, _serial in disks if not os.path.abspath(path).startswith(self.vm_dir + "/")]
        if outside:
            raise FleetError(f"netboot VM disks must be under {self.vm_dir}: {', '.join(outside)}")
        firmware_vars = os.path.join(self.vm_dir, f"{host}.OVMF_VARS.fd")
        shutil.copyfile(netboot.OVMF_VARS, firmware_vars)
        accelerator = vm.choose_accelerator(ensure_vm_image(ensure_rootfs())["kernel"], CACHE_DIR, log)
        index = len(state["hosts"]) + 1
        mac = f"52:54:00:{self.subnet_octet:02x}:{index // 256:02x}:{index % 256:02x}"
        console_log = os.path.join(self.run_dir, f"{host}.console.log")
        qemu_log = open(os.path.join(self.vm_dir, f"{host}.qemu.log"), "w")
        process = subprocess.Popen(netboot.qemu_argv(accelerator, firmware_vars, disks, ssh_port, boot_url, mac, console_log),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_log,
                                   start_new_session=True)
        qemu_log.close()
        log(f"{host}: QEMU ({accelerator.split(',', maxsplit=1)[0]}), UEFI, network boot from {boot_url}")
        state["hosts"][host] = {"address": "127.0.0.1", "ssh_port": ssh_port, "pid": process.pid, "mac": mac,
                                "accelerator": accelerator.split(",", maxsplit=1)[0], "disks": disks, "netboot": boot_url}
        self._save(state)
        self._write_inventory(state)
        return state["hosts"][host]

    def wait_for_ssh(self, host, timeout):
        """Wait until HOST answers over SSH and its systemd has finished booting."""
        self._wait_ready(host, self.hosts()[host], timeout)

    def _make_btrfs(self, host, size):
        image = os.path.join(self.run_dir, f"{host}.btrfs.img")
        mount = os.path.join(self.run_dir, f"{host}.btrfs")
        run(["truncate", "-s", size, image])
        run(["mkfs.btrfs", "-q", "-L", f"{self.name}-{host}", image])
        loop = run(["losetup", "--find", "--show", image]).stdout.strip()
        os.makedirs(mount)
        run(["mount", "-t", "btrfs", loop, mount])
        return {"image": image, "loop": loop, "mount": mount, "path_in_host": BTRFS_MOUNT_IN_HOST}

    def _wait_ready(self, host, info, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(info["pid"]):
                raise FleetError(f"{host}: {'QEMU' if 'accelerator' in info else 'systemd-nspawn'} exited during boot; "
                                 f"see {self.run_dir}/{host}.console.log")
            with contextlib.suppress(OSError):
                socket.create_connection((info["address"], info.get("ssh_port", 22)), timeout=1).close()
                status = self.ssh(host, "systemctl is-system-running --wait", check=False, timeout=max(1, deadline - time.monotonic()))
                if status.stdout.strip() in ("running", "degraded"):
                    if status.stdout.strip() == "degraded":
                        failed = self.ssh(host, "systemctl --failed --no-legend --plain", check=False).stdout.strip()
                        log(f"{host}: booted degraded; failed units: {failed or 'none listed'}")
                    return
            time.sleep(0.2)
        raise FleetError(f"{host}: not reachable over SSH within {timeout} s; see {self.run_dir}/{host}.console.log")

    def _write_inventory(self, state):
        lines = [
            "---",
            "# Written by tests/fleet/fleet.py for this run; removed by `fleet.py down`.",
            "all:",
            "  vars:",
            "    ansible_user: root",
            f"    ansible_ssh_private_key_file: {self.key_file}",
            f"    ansible_ssh_common_args: {' '.join(SSH_OPTIONS)}",
            "    ansible_python_interpreter: /usr/bin/python3",
            "  hosts:",
        ]
        for host, info in state["hosts"].items():
            lines.append(f"    {host}:")
            lines.append(f"      ansible_host: {info['address']}")
            if "ssh_port" in info:
                lines.append(f"      ansible_port: {info['ssh_port']}")
            if "btrfs" in info:
                lines.append(f"      fleet_btrfs_mount: {BTRFS_MOUNT_IN_HOST}")
            if "numa" in info:
                lines.append(f"      fleet_vm_numa: {json.dumps(info['numa'])}")
                lines.append(f"      fleet_vm_distances: {json.dumps(info['distances'])}")
        _write(self.inventory_file, "\n".join(lines) + "\n", mode=0o600)

    # ---- use
    def ssh(self, host, command, input=None, check=True, timeout=60):
        """Run COMMAND (a shell string, as ssh always does) on HOST and return the CompletedProcess."""
        info = self.hosts()[host]
        argv = ["ssh", "-i", self.key_file, *SSH_OPTIONS, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-p", str(info.get("ssh_port", 22)), f"root@{info['address']}", command]
        result = subprocess.run(argv, input=input, text=True,
                                capture_output=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise FleetError(f"{host}: `{command}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def run_module(self, host, module, arguments, check_mode=False):
        """Run one module on HOST with ``ansible`` and return its result as a dict."""
        argv = [ansible_command("ansible"), "-i", self.inventory_file, host, "-m", module]
        if arguments:  # ansible reads an empty "-a {}" as free-form text, which most modules refuse
            argv += ["-a", json.dumps(arguments)]
        if check_mode:
            argv.append("--check")
        result = subprocess.run(argv, env=ansible_environment(ANSIBLE_CALLBACK_RESULT_FORMAT="json",
                                                              ANSIBLE_LOAD_CALLBACK_PLUGINS="1"),
                                capture_output=True, text=True, check=False)
        if "=>" not in result.stdout:
            raise FleetError(f"{host}: {module} gave no result: {result.stdout.strip()} {result.stderr.strip()}")
        header, reply = result.stdout.split("=>", 1)
        parsed = json.loads(reply)
        if "| FAILED" in header:  # a task-level error (bad arguments, ...) comes back without "failed"
            parsed.setdefault("failed", True)
        return parsed

    # ---- serve
    @property
    def serve_dir(self):
        return os.path.join(self.run_dir, "serve")

    @property
    def access_log(self):
        return os.path.join(self.serve_dir, "access.log")

    def serve(self, directory, port=8080, git_port=9418):
        """Serve DIRECTORY read-only until ``down``: over HTTP at http://GATEWAY:PORT/ (with directory
        listings, which pip's --find-links reads) and its bare repositories at git://GATEWAY/NAME.git
        (git's own protocol, because ansible-pull's shallow clones need more than dumb HTTP).
        Returns both base URLs. One server per fleet."""
        self.state()
        missing = [f"{tool} (Debian package {package})" for tool, package in SERVE_TOOLS.items()
                   if shutil.which(tool) is None]
        if missing:
            raise FleetError(f"missing {', '.join(missing)}; `make deps` installs it")
        if not os.path.isdir(directory):
            raise FleetError(f"{directory} is not a directory")
        if self._server_pids():
            raise FleetError(f"fleet {self.name!r} already serves a directory; `down` stops it")
        directory = os.path.abspath(directory)
        conf = os.path.join(self.serve_dir, "nginx.conf")
        os.makedirs(os.path.join(self.serve_dir, "temp"), mode=0o700, exist_ok=True)
        # The workers run as root because the served tree usually lives under the 0700 run directory.
        _write(conf, f"""\
daemon on;
user root;
worker_processes 1;
pid {self.serve_dir}/nginx.pid;
error_log {self.serve_dir}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {self.access_log};
    client_body_temp_path {self.serve_dir}/temp/body;
    proxy_temp_path {self.serve_dir}/temp/proxy;
    fastcgi_temp_path {self.serve_dir}/temp/fastcgi;
    uwsgi_temp_path {self.serve_dir}/temp/uwsgi;
    scgi_temp_path {self.serve_dir}/temp/scgi;
    server {{
        listen {self.gateway}:{port};
        root {directory};
        autoindex on;
    }}
}}
""")
        run(["nginx", "-e", os.path.join(self.serve_dir, "error.log"), "-c", conf])
        run(["git", "daemon", "--detach", "--reuseaddr", "--export-all", f"--base-path={directory}",
             f"--listen={self.gateway}", f"--port={git_port}", f"--pid-file={self.serve_dir}/git-daemon.pid",
             directory])
        return f"http://{self.gateway}:{port}", f"git://{self.gateway}:{git_port}"

    # ---- down
    def down(self, quiet=False, stop_timeout=30):
        """Stop every host and remove everything named after this fleet; safe to call repeatedly."""
        pids = set(self._nspawn_pids()) | set(self._server_pids()) | set(self._vm_pids())
        with contextlib.suppress(FleetError, FileNotFoundError, json.JSONDecodeError):
            pids.update(info["pid"] for info in self.state()["hosts"].values() if _alive(info["pid"]))
        for pid in pids:
            # SIGTERM makes nspawn power the machine off cleanly; SIGKILL would orphan its processes.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + stop_timeout
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if _alive(pid):
                log(f"process {pid} ignored SIGTERM for {stop_timeout} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for netns in self._netns_names():
            # Whatever still lives in the namespace (orphans of a killed nspawn) goes with it.
            for pid in run(["ip", "netns", "pids", netns], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", netns], check=False)
        for link in self._links():
            run(["ip", "link", "del", link], check=False)
        for mount in sorted(self._mounts(), reverse=True):
            run(["umount", "-l", mount], check=False)
        for loop in self._loops():
            run(["losetup", "-d", loop], check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if not quiet:
            log(f"fleet {self.name!r} is down")

    def leftovers(self, settle=10):
        """What of this fleet still exists (empty when clean); waits briefly for async kernel cleanup."""
        deadline = time.monotonic() + settle
        while True:
            found = [f"nspawn process {pid}" for pid in self._nspawn_pids()]
            found += [f"server process {pid}" for pid in self._server_pids()]
            found += [f"VM process {pid}" for pid in self._vm_pids()]
            found += [f"network namespace {name}" for name in self._netns_names()]
            found += [f"link {name}" for name in self._links()]
            found += [f"mount {path}" for path in self._mounts()]
            found += [f"loop device {dev}" for dev in self._loops()]
            if os.path.exists(self.run_dir):
                found.append(f"directory {self.run_dir}")
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    # ---- discovery by name (works without state.json)
    def _nspawn_pids(self):
        pids = []
        marker = f"/run/netns/opdbus-{self.name}-"
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
                if argv and os.path.basename(argv[0]) == b"systemd-nspawn" and any(marker.encode() in a for a in argv):
                    pids.append(int(entry))
        return pids

    def _server_pids(self):
        # nginx's and git daemon's command lines name files in the serve directory (nginx rewrites its
        # title but keeps its arguments); nginx's workers and git's per-clone children go with them.
        return self._pids_naming(self.serve_dir)

    def _vm_pids(self):
        return self._pids_naming(self.vm_dir)  # QEMU's command line names the VM's disk

    def _pids_naming(self, directory):
        marker = (directory + "/").encode()
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        if marker in handle.read():
                            pids.append(int(entry))
        return pids

    def _netns_names(self):
        listing = run(["ip", "netns", "list"], check=False).stdout
        return [line.split()[0] for line in listing.splitlines() if line.startswith(f"opdbus-{self.name}-")]

    def _links(self):
        listing = run(["ip", "-o", "link", "show"], check=False).stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines() if ":" in line]
        return [name for name in names
                if name == self.bridge or name.startswith((f"ofv-{self.name}-", f"oft-{self.name}-"))]

    def _mounts(self):
        with open("/proc/self/mounts") as handle:
            points = [line.split()[1] for line in handle]
        prefix = self.run_dir + "/"
        return [point for point in points if point.startswith(prefix)]

    def _loops(self):
        listing = run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], check=False).stdout
        prefix = self.run_dir + "/"
        return [line.split()[0] for line in listing.splitlines()
                if len(line.split()) > 1 and line.split(None, 1)[1].strip().startswith(prefix)]


@contextlib.contextmanager
def booted_fleet(name, count, **options):
    """A fleet that is up inside the with block; after it, down with nothing of it left."""
    fleet = Fleet(name)
    fleet.up(count, **options)
    try:
        yield fleet
    finally:
        fleet.down()
    leftovers = fleet.leftovers()
    if leftovers:
        raise FleetError(f"fleet {name!r} left behind after down: {leftovers}")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def all_fleet_names():
    """Names of fleets that left anything behind: run directories, namespaces or bridges."""
    names = set()
    with contextlib.suppress(FileNotFoundError):
        names.update(os.listdir(RUN_ROOT))
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        match = re.match(r"opdbus-([a-z0-9]+)-", line)
        if match:
            names.add(match.group(1))
    for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        match = re.search(r": ofb-([a-z0-9]+)[:@]", line)
        if match:
            names.add(match.group(1))
    return sorted(name for name in names if NAME_PATTERN.match(name))


# --------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("rootfs", help="build (or reuse) the cached root filesystem and print its path")
    commands.add_parser("netboot-images", help="build (or reuse) the netboot installer's images and print their directory")
    up = commands.add_parser("up", help="boot a fleet and write its Ansible inventory")
    up.add_argument("--name", default="opdbus")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--btrfs", default="", help="comma-separated hosts (or 'all') given a BTRFS mount at /mnt/btrfs")
    up.add_argument("--btrfs-size", default="512M")
    up.add_argument("--vm", action="append", default=[], metavar="HOST",
                    help="add a QEMU virtual machine HOST (repeatable; its topology is the --numa of the same rank)")
    up.add_argument("--numa", action="append", default=[], metavar="SPEC",
                    help="NUMA topology of each --vm: NODESxCPUS[:MEMORYM][,nic@NODE][,nvme@NODE], e.g. 2x1 or "
                    "4x1,nic@3,nvme@1 (default 1x1)")
    down = commands.add_parser("down", help="stop a fleet and remove all it created")
    down.add_argument("--name", default="opdbus")
    down.add_argument("--all", action="store_true", help="every fleet that left anything behind")
    down.add_argument("--prefix", help="every fleet whose name starts with PREFIX (a test stage's own fleets)")
    clean = commands.add_parser("check-clean", help="fail if anything of a fleet is left")
    clean.add_argument("--name", default=None, help="default: every fleet")
    clean.add_argument("--prefix", help="only fleets whose name starts with PREFIX")
    inventory = commands.add_parser("inventory", help="print the inventory path of a running fleet")
    inventory.add_argument("--name", default="opdbus")
    serve = commands.add_parser("serve", help="serve a directory to the fleet's hosts over HTTP (nginx) and its "
                                "git repositories (git daemon) until down; prints both base URLs")
    serve.add_argument("--name", default="opdbus")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--git-port", type=int, default=9418)
    serve.add_argument("directory")
    ssh = commands.add_parser("ssh", help="run a command on a host")
    ssh.add_argument("--name", default="opdbus")
    ssh.add_argument("host")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "rootfs":
            preflight()
            print(ensure_rootfs())
        elif args.command == "netboot-images":
            preflight(dict(REQUIRED_TOOLS, **VM_TOOLS))
            print(ensure_netboot_images())
        elif args.command == "up":
            fleet = Fleet(args.name)
            if len(args.numa) > len(args.vm):
                raise FleetError("each --numa belongs to a --vm; give the VM first")
            vms = dict(zip(args.vm, args.numa + ["1x1"] * (len(args.vm) - len(args.numa))))
            state = fleet.up(args.hosts, [h for h in args.btrfs.split(",") if h], args.btrfs_size, vms=vms)
            log(f"{len(state['hosts'])} hosts up in {state['boot_seconds']} s: "
                + ", ".join(f"{h}={i['address']}" for h, i in state["hosts"].items()))
            print(fleet.inventory_file)
        elif args.command == "down":
            names = [args.name]
            if args.all or args.prefix:
                names = [name for name in all_fleet_names() if name.startswith(args.prefix or "")]
            for name in names:
                Fleet(name).down()
        elif args.command == "check-clean":
            names = [args.name] if args.name else [
                name for name in all_fleet_names() if name.startswith(args.prefix or "")]
            leftovers = [item for name in names for item in Fleet(name).leftovers()]
            if leftovers:
                raise FleetError("left behind: " + "; ".join(leftovers))
            log("clean: no nspawn or server process, namespace, link, mount or loop device of a fleet is left")
        elif args.command == "inventory":
            fleet = Fleet(args.name)
            fleet.state()
            print(fleet.inventory_file)
        elif args.command == "serve":
            print("\n".join(Fleet(args.name).serve(args.directory, args.port, args.git_port)))
        elif args.command == "ssh":
            result = Fleet(args.name).ssh(args.host, " ".join(args.remote_command), check=False, timeout=None)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.returncode
    except FleetError as error:
        log(f"error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
