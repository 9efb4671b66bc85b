# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's NUMA topology, read from sysfs.

``Topology.read`` takes everything from a sysfs tree whose root is configurable (tests use fixture
trees): nodes, their CPUs, memory, distances, numastat counters and huge pages under
``devices/system/node``; GPUs, NICs and NVMe controllers from ``bus/pci/devices`` with their node,
named through ``class/net`` and ``class/nvme``.
"""

from __future__ import annotations

import os
import re

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError


SYSFS_ROOT = "/sys"
NODE_DIR = "devices/system/node"
CPU_ONLINE = "devices/system/cpu/online"
PCI_DEVICES = "bus/pci/devices"
DEVICE_CLASSES = ("class/net", "class/nvme")

# NR_CPUS (and MAX_NUMNODES) is at most 8192 in any kernel configuration; a larger number in a list
# is a typo, and expanding "0-4000000000" would exhaust memory before it could be rejected.
MAX_ID = 1 << 16
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$", re.ASCII)

# PCI class codes are 24 bits: base class, subclass, programming interface.
PCI_DISPLAY = 0x03  # VGA 0x0300, 3D controller 0x0302 (datacenter GPUs), other 0x0380 (AMD Instinct)
PCI_VGA = 0x0300
PCI_NETWORK = 0x02  # Ethernet 0x0200, InfiniBand 0x0207, other 0x0280 (Wi-Fi)
PCI_NVME = 0x010802  # mass storage / non-volatile memory / NVMe

# A VGA function is a GPU only from a GPU maker. Otherwise it is a server BMC's remote console
# (ASPEED, Matrox) or an emulated adapter (QEMU, Cirrus, VMware), which would take the name gpu0 on
# a DGX or a GPU VM and shift every GPU index by one.
GPU_VENDORS = {0x10DE: "NVIDIA", 0x1002: "AMD", 0x8086: "Intel"}


class NumaError(OpdbusError):
    """Bad input or an unreadable topology, with a message that names what is wrong."""


# ---------------------------------------------------------------------------------- lists
def parse_list(text):
    """The kernel's list format (cpulist, node lists): ``"0-3,8-11"`` -> ``[0, 1, 2, 3, 8, 9, 10, 11]``."""
    ids = set()
    for part in text.strip().split(",") if text.strip() else ():
        match = _RANGE.match(part.strip())
        if not match:
            raise ValueError(f"{text.strip()!r} is not a list such as 0-3,8-11")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if high < low or high >= MAX_ID:
            raise ValueError(f"{part.strip()!r} is not a valid range")
        ids.update(range(low, high + 1))
    return sorted(ids)


def format_list(ids):
    """``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``, the form systemd and the kernel both read."""
    runs = []
    for value in sorted(set(ids)):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def id_list(value):
    """An option given as a number, a list of numbers or a kernel list string, as sorted ids."""
    if isinstance(value, str):
        ids = parse_list(value)
    else:
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, bool) or not isinstance(item, (int, str)) for item in items):
            raise ValueError(f"expected a number, a list of numbers or a list such as 0-3,8-11, got {value!r}")
        ids = sorted({number for item in items for number in (parse_list(item) if isinstance(item, str) else [item])})
    if not ids:
        raise ValueError("the list is empty")
    if ids[0] < 0:
        raise ValueError(f"{ids[0]} is negative")
    return ids


# ---------------------------------------------------------------------------------- sysfs
def _read(path):
    """A sysfs attribute's text without its newline; None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_int(path, base=10):
    text = _read(path)
    return None if text is None else int(text, base)


def _list_dir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


class Node:
    """One NUMA node. ``memory`` and ``numastat`` are None on a kernel without NUMA support."""

    __slots__ = ("id", "cpus", "has_memory", "memory", "numastat", "hugepages")

    def __init__(self, node_id, cpus, has_memory=True, memory=None, numastat=None, hugepages=None):
        self.id = node_id
        self.cpus = cpus
        self.has_memory = has_memory
        self.memory = memory
        self.numastat = numastat
        self.hugepages = hugepages or {}

    @property
    def local_hit_ratio(self):
        """Share of the pages allocated by processes on this node that came from this node."""
        if not self.numastat:
            return None
        local, other = self.numastat.get("local_node", 0), self.numastat.get("other_node", 0)
        return round(local / (local + other), 6) if local + other else None

    def as_dict(self):
        return {"id": self.id, "cpus": self.cpus, "has_memory": self.has_memory, "memory": self.memory,
                "numastat": self.numastat, "local_hit_ratio": self.local_hit_ratio, "hugepages": self.hugepages}

    @classmethod
    def read(cls, directory, node_id, has_memory):
        return cls(node_id, parse_list(_read(os.path.join(directory, "cpulist")) or ""), has_memory,
                   _read_meminfo(os.path.join(directory, "meminfo")),
                   _read_numastat(os.path.join(directory, "numastat")),
                   _read_hugepages(os.path.join(directory, "hugepages")))


def _read_meminfo(path):
    """``Node 0 MemTotal:  4548828 kB`` lines -> total, free and used kB."""
    values = {}
    for line in (_read(path) or "").splitlines():
        words = line.replace(":", " ").split()
        if len(words) >= 4 and words[0] == "Node":
            values[words[2]] = int(words[3])
    return {"total_kb": values.get("MemTotal"), "free_kb": values.get("MemFree"), "used_kb": values.get("MemUsed")}


def _read_numastat(path):
    counters = {}
    for line in (_read(path) or "").splitlines():
        name, value = line.split()
        counters[name] = int(value)
    return counters


def _read_hugepages(directory):
    """``hugepages-2048kB/{nr,free,surplus}_hugepages`` -> ``{"2048kB": {"total", "free", "surplus"}}``."""
    pools = {}
    for name in _list_dir(directory):
        pool = os.path.join(directory, name)
        pools[name[len("hugepages-"):]] = {
            "total": _read_int(os.path.join(pool, "nr_hugepages")),
            "free": _read_int(os.path.join(pool, "free_hugepages")),
            "surplus": _read_int(os.path.join(pool, "surplus_hugepages")),
        }
    return pools


class Device:
    """A GPU, NIC or NVMe controller on the PCI bus; ``node`` is None when it is on no particular node."""

    __slots__ = ("address", "kind", "pci_class", "vendor", "device", "node", "local_cpus", "names")

    def __init__(self, address, kind, pci_class, vendor, device, node, local_cpus):
        self.address = address
        self.kind = kind
        self.pci_class = pci_class
        self.vendor = vendor
        self.device = device
        self.node = node
        self.local_cpus = local_cpus
        self.names = []  # gpuN, netdev names, nvmeN: what `device:` accepts besides the address

    def as_dict(self):
        return {"address": self.address, "kind": self.kind, "names": self.names,
                "class": _hex(self.pci_class, 6), "vendor": _hex(self.vendor, 4), "device": _hex(self.device, 4),
                "node": self.node, "local_cpus": self.local_cpus}


def _hex(value, digits):
    """A PCI id as sysfs writes it, or None when sysfs did not say."""
    return None if value is None else f"0x{value:0{digits}x}"


def _device_kind(pci_class, vendor):
    if pci_class == PCI_NVME:
        return "nvme"
    if pci_class >> 16 == PCI_NETWORK:
        return "nic"
    if pci_class >> 16 == PCI_DISPLAY and (pci_class >> 8 != PCI_VGA or vendor in GPU_VENDORS):
        return "gpu"
    return None


def _read_devices(root):
    devices = []
    by_path = {}
    pci = os.path.join(root, PCI_DEVICES)
    for address in _list_dir(pci):
        path = os.path.join(pci, address)
        pci_class, vendor = _read_int(os.path.join(path, "class"), 16), _read_int(os.path.join(path, "vendor"), 16)
        # A function without a class file (a hot-unplug in progress, a stripped sysfs) cannot be placed near.
        kind = _device_kind(pci_class, vendor) if pci_class is not None else None
        if kind is None:
            continue
        node = _read_int(os.path.join(path, "numa_node"))  # -1, or no file without CONFIG_NUMA
        device = Device(address, kind, pci_class, vendor, _read_int(os.path.join(path, "device"), 16),
                        node if node is not None and node >= 0 else None,
                        parse_list(_read(os.path.join(path, "local_cpulist")) or ""))
        devices.append(device)
        by_path[os.path.realpath(path)] = device
    # GPUs are numbered in PCI address order: on a machine whose GPUs are all NVIDIA's (a DGX), the
    # order of nvidia-smi and of CUDA_DEVICE_ORDER=PCI_BUS_ID.
    for index, gpu in enumerate(device for device in devices if device.kind == "gpu"):
        gpu.names.append(f"gpu{index}")
    for class_dir in DEVICE_CLASSES:
        _attach_class_names(os.path.join(root, class_dir), by_path)
    return devices


def _attach_class_names(class_dir, by_path):
    """Name each PCI device after the netdevs or NVMe controllers whose ``device`` link leads to it.

    The link may point below the PCI function (virtio-net: ``device -> …/0000:00:03.0/virtio2``), so
    the path is walked up to the nearest PCI device. Virtual interfaces have no ``device`` link.
    """
    for name in _list_dir(class_dir):
        link = os.path.join(class_dir, name, "device")
        if not os.path.exists(link):
            continue
        path = os.path.realpath(link)
        while path not in by_path and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if path in by_path:
            by_path[path].names.append(name)


class Topology:
    """Nodes by id, the distance matrix and the PCI devices of one machine."""

    def __init__(self, nodes, distances, devices, numa_supported=True):
        self.nodes = nodes
        self.distances = distances  # {from node: {to node: distance}}
        self.devices = devices
        self.numa_supported = numa_supported

    @classmethod
    def read(cls, root=SYSFS_ROOT):
        try:
            return cls._read(root)
        except (OSError, ValueError) as error:
            raise NumaError(f"cannot read the NUMA topology from {root}: {error}") from None

    @classmethod
    def _read(cls, root):
        node_dir = os.path.join(root, NODE_DIR)
        online = _read(os.path.join(node_dir, "online"))
        if online is None:
            # A kernel built without CONFIG_NUMA has no node directory: all CPUs form one node.
            cpus = _read(os.path.join(root, CPU_ONLINE))
            if cpus is None:
                raise NumaError(f"{root} is not a sysfs tree: it has neither {NODE_DIR}/online nor {CPU_ONLINE}")
            nodes = {0: Node(0, parse_list(cpus))}
            return cls(nodes, {0: {0: 10}}, _read_devices(root), numa_supported=False)
        node_ids = parse_list(online)
        with_memory = _read(os.path.join(node_dir, "has_memory"))
        memory_ids = set(parse_list(with_memory)) if with_memory is not None else set(node_ids)
        nodes = {node_id: Node.read(os.path.join(node_dir, f"node{node_id}"), node_id, node_id in memory_ids)
                 for node_id in node_ids}
        distances = {}
        for node_id in node_ids:
            # One distance per online node, in the order of the online list (node ids may have gaps).
            row = (_read(os.path.join(node_dir, f"node{node_id}", "distance")) or "").split()
            distances[node_id] = dict(zip(node_ids, (int(value) for value in row)))
        return cls(nodes, distances, _read_devices(root))

    @property
    def node_ids(self):
        return sorted(self.nodes)

    @property
    def cpus(self):
        return sorted(cpu for node in self.nodes.values() for cpu in node.cpus)

    def cpus_of(self, node_ids):
        return sorted(cpu for node_id in node_ids for cpu in self.nodes[node_id].cpus)

    def find_device(self, reference):
        """The device with this PCI address, gpuN name, netdev name or nvmeN name; None if there is none."""
        for device in self.devices:
            if reference == device.address or reference in device.names:
                return device
        return None

    def recommended_node(self, device):
        """The node to run a user of DEVICE on: its own node, or the nearest one that has CPUs and memory.

        A device on no particular node gets the only node of a one-node machine, else None.
        """
        if device.node is None or device.node not in self.nodes:
            return self.node_ids[0] if len(self.nodes) == 1 else None
        usable = [node.id for node in self.nodes.values() if node.cpus and node.has_memory]
        if not usable:
            return device.node
        return min(usable, key=lambda node_id: (self.distances[device.node].get(node_id, MAX_ID), node_id))

    def device_summary(self):
        """What `device:` can name on this host, for error messages."""
        if not self.devices:
            return "this host has no GPU, NIC or NVMe device on its PCI bus"
        return "known: " + ", ".join(" ".join([device.address] + device.names) for device in self.devices)

    def as_dict(self):
        node_ids = self.node_ids
        return {
            "numa_supported": self.numa_supported,
            "node_ids": node_ids,
            "cpus": self.cpus,
            "nodes": [self.nodes[node_id].as_dict() for node_id in node_ids],
            "distance_matrix": [[self.distances[a].get(b) for b in node_ids] for a in node_ids],
            "devices": [dict(device.as_dict(), recommended_node=self.recommended_node(device))
                        for device in self.devices],
        }


def sysfs_spec():
    """The ``sysfs_root`` option of the NUMA modules (tests point it at a fixture tree)."""
    return ArgumentSpec(dict(sysfs_root=dict(type="path", default=SYSFS_ROOT)))


def topology_task(params, check_mode, context):
    """opdbus_numa_info: the host's NUMA topology."""
    return Topology.read(params["sysfs_root"]).as_dict()
