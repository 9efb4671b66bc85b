#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_numa_info
short_description: NUMA topology of a host from sysfs, with the node to use for each GPU and NIC
version_added: 0.1.0
description:
  - Reads the host's NUMA topology from sysfs (C(/sys/devices/system/node)) - the online nodes, the
    CPUs of each node, its memory, the distance matrix, the numastat counters with the local-hit ratio,
    and the huge page pools of each node.
  - Lists the GPUs, NICs and NVMe controllers on the PCI bus (C(/sys/bus/pci/devices)) with their
    node and the node recommended for the processes that use them.
  - Nothing on the host changes, and neither D-Bus nor any command is used.
  - With O(query), evaluates a JMESPath expression on the host over the result, so only the answer
    travels back to the controller.
author:
  - opdbus.fleet developers (@opdbus)
options:
  sysfs_root:
    description:
      - Where sysfs is mounted. Only tests need another value, to read a fixture tree.
    type: path
    default: /sys
notes:
  - A device whose firmware does not tell the kernel its node reports C(numa_node) -1; it is returned
    with RV(devices[].node=null). Laptops and virtual machines usually report every device so.
  - GPUs are PCI display controllers (class C(0x03xxxx)); a VGA function (C(0x0300xx)) counts only
    from NVIDIA, AMD or Intel, so a server BMC's console or a virtual machine's emulated VGA is not a GPU.
    NICs are network controllers (C(0x02xxxx)), Ethernet, InfiniBand or Wi-Fi; NVMe controllers are
    class C(0x010802).
  - See C(docs/numa.md) in the collection for what is read from where.
extends_documentation_fragment:
  - opdbus.fleet.attributes.info_module
  - opdbus.fleet.query
seealso:
  - module: opdbus.fleet.opdbus_numa
"""

EXAMPLES = r"""
- name: Read the NUMA topology
  opdbus.fleet.opdbus_numa_info:
  register: numa

- name: Show the node to run each GPU's feeder on
  ansible.builtin.debug:
    msg: "{{ item.names[0] }} ({{ item.address }}): node {{ item.recommended_node }}"
  loop: "{{ numa.devices | selectattr('kind', 'eq', 'gpu') }}"
  loop_control:
    label: "{{ item.address }}"

- name: Ask the host only for the local-hit ratio of each node
  opdbus.fleet.opdbus_numa_info:
    query: "nodes[].{node: id, local_hit_ratio: local_hit_ratio}"
  register: hits
"""

RETURN = r"""
numa_supported:
  description: Whether the kernel has NUMA support. Without it, all CPUs form node 0 and memory figures are null.
  returned: always
  type: bool
  sample: true
node_ids:
  description: The online nodes, in order.
  returned: always
  type: list
  elements: int
  sample: [0, 1]
cpus:
  description: The CPUs of all nodes.
  returned: always
  type: list
  elements: int
  sample: [0, 1, 2, 3]
nodes:
  description: One entry per online node, in the order of RV(node_ids).
  returned: always
  type: list
  elements: dict
  contains:
    id: {description: The node number., type: int, returned: always}
    cpus: {description: The node's CPUs (C(nodeN/cpulist))., type: list, elements: int, returned: always}
    has_memory: {description: Whether the node has memory (a CPU-only or memory-only node is possible)., type: bool, returned: always}
    memory:
      description: C(MemTotal), C(MemFree) and C(MemUsed) of C(nodeN/meminfo), in kB.
      type: dict
      returned: always
      sample: {"total_kb": 65842412, "free_kb": 52114900, "used_kb": 13727512}
    numastat:
      description: The counters of C(nodeN/numastat) (pages).
      type: dict
      returned: always
      sample: {"numa_hit": 9209136832, "numa_miss": 16037973, "numa_foreign": 16037973,
               "interleave_hit": 1123, "local_node": 9161022911, "other_node": 48113921}
    local_hit_ratio:
      description:
        - C(local_node / (local_node + other_node)) - the share of pages allocated by processes running on this
          node that came from this node. Null when both counters are 0.
      type: float
      returned: always
      sample: 0.994775
    hugepages:
      description: Huge page pools of the node by page size (C(nodeN/hugepages/hugepages-SIZE)).
      type: dict
      returned: always
      sample: {"2048kB": {"total": 512, "free": 128, "surplus": 0}}
distance_matrix:
  description: Row I, column J is the distance from node RV(node_ids)[I] to node RV(node_ids)[J] (10 is local).
  returned: always
  type: list
  elements: list
  sample: [[10, 21], [21, 10]]
devices:
  description: GPUs, NICs and NVMe controllers on the PCI bus, in PCI address order.
  returned: always
  type: list
  elements: dict
  contains:
    address: {description: PCI address., type: str, returned: always, sample: "0000:07:00.0"}
    kind:
      description: One of V(gpu), V(nic), V(nvme).
      type: str
      returned: always
    names:
      description:
        - Names that O(opdbus.fleet.opdbus_numa#module:units.device) accepts besides the address -
          C(gpuN) (GPUs numbered in PCI address order), network interface names, C(nvmeN).
      type: list
      elements: str
      returned: always
      sample: ["gpu0"]
    class: {description: PCI class code., type: str, returned: always, sample: "0x030200"}
    vendor: {description: PCI vendor ID., type: str, returned: always, sample: "0x10de"}
    device: {description: PCI device ID., type: str, returned: always, sample: "0x20b0"}
    node: {description: The device's node; null when it reports none (C(numa_node) -1)., type: int, returned: always}
    local_cpus: {description: The CPUs the kernel considers local to the device (C(local_cpulist))., type: list, elements: int, returned: always}
    recommended_node:
      description:
        - The node to run the device's users on - its own node, or the nearest node by distance that has both
          CPUs and memory when its own lacks either. On a one-node host, that node. Null when the device is
          on no particular node of a multi-node host.
      type: int
      returned: always
      sample: 3
query_result:
  description: The answer to O(query).
  returned: when O(query) is given
  type: raw
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import query_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.topology import sysfs_spec, topology_task


def main():
    run_module(sysfs_spec().merge(query_spec()), topology_task)


if __name__ == "__main__":
    main()
