# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""NUMA topology read from sysfs trees of real layouts, from a capture of a real /sys, and from this machine's /sys."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.opdbus.fleet.plugins.module_utils._numa.topology import (
    NumaError, Topology, format_list, parse_list,
)
from ansible_collections.opdbus.fleet.tests.unit.fixtures.numa import sysfs


def read(machine, tmp_path):
    return Topology.read(machine.write(tmp_path))


# ---------------------------------------------------------------------------------- lists
@pytest.mark.parametrize("text, ids", [
    ("0-3,8-11\n", [0, 1, 2, 3, 8, 9, 10, 11]),
    ("0", [0]),
    ("", []),
    ("\n", []),
    ("5,1-2", [1, 2, 5]),
    ("0-15,128-143", list(range(16)) + list(range(128, 144))),
])
def test_parse_list(text, ids):
    assert parse_list(text) == ids


@pytest.mark.parametrize("text", ["a", "1-", "-1", "3-1", "1,,2", "0-70000", "١"])
def test_parse_list_rejects(text):
    with pytest.raises(ValueError):
        parse_list(text)


@given(st.sets(st.integers(min_value=0, max_value=600)))
def test_format_list_round_trips(ids):
    assert parse_list(format_list(ids)) == sorted(ids)


def test_format_list_compresses_runs():
    assert format_list([8, 0, 1, 2, 3, 10, 11]) == "0-3,8,10-11"


def test_fixture_masks_match_the_kernel_format():
    # The kernel's %*pb: 32-bit words, most significant first; the first word as wide as needed.
    assert sysfs.cpumask([0, 1], 2) == "3"
    assert sysfs.cpumask(range(8), 8) == "ff"
    assert sysfs.cpumask(list(range(16)) + list(range(32, 48)), 64) == "0000ffff,0000ffff"


# ---------------------------------------------------------------------------------- machines
def test_laptop_is_one_node_and_every_device_goes_to_it(tmp_path):
    topology = read(sysfs.laptop(), tmp_path)
    facts = topology.as_dict()
    assert facts["node_ids"] == [0] and facts["cpus"] == list(range(8))
    assert facts["distance_matrix"] == [[10]]
    assert facts["nodes"][0]["memory"] == {"total_kb": 16_115_516, "free_kb": 9_871_220, "used_kb": 6_244_296}
    devices = {device["address"]: device for device in facts["devices"]}
    # The USB Ethernet adapter hangs off the xHCI controller, which is no NIC: it is not attributed.
    assert sorted(devices) == ["0000:00:02.0", "0000:00:14.3", "0000:01:00.0", "0000:02:00.0"]
    assert devices["0000:00:02.0"]["names"] == ["gpu0"] and devices["0000:01:00.0"]["names"] == ["gpu1"]
    assert devices["0000:01:00.0"]["class"] == "0x030200" and devices["0000:01:00.0"]["vendor"] == "0x10de"
    assert devices["0000:00:14.3"]["kind"] == "nic" and devices["0000:00:14.3"]["names"] == ["wlp0s20f3"]
    assert devices["0000:02:00.0"]["kind"] == "nvme" and devices["0000:02:00.0"]["names"] == ["nvme0"]
    assert all(device["node"] is None and device["recommended_node"] == 0 for device in facts["devices"])
    assert devices["0000:02:00.0"]["local_cpus"] == list(range(8))


def test_workstation_has_two_sockets(tmp_path):
    facts = read(sysfs.workstation(), tmp_path).as_dict()
    assert facts["node_ids"] == [0, 1]
    assert facts["nodes"][0]["cpus"] == list(range(16)) + list(range(32, 48))
    assert facts["nodes"][1]["cpus"] == list(range(16, 32)) + list(range(48, 64))
    assert facts["distance_matrix"] == [[10, 21], [21, 10]]
    node0 = facts["nodes"][0]
    assert node0["numastat"]["local_node"] == 9_161_022_911 and node0["numastat"]["other_node"] == 48_113_921
    assert node0["local_hit_ratio"] == round(9_161_022_911 / (9_161_022_911 + 48_113_921), 6)
    assert node0["hugepages"] == {"2048kB": {"total": 512, "free": 128, "surplus": 0},
                                  "1048576kB": {"total": 4, "free": 4, "surplus": 0}}
    by_name = {name: device for device in facts["devices"] for name in device["names"]}
    assert (by_name["gpu0"]["node"], by_name["gpu1"]["node"], by_name["nvme0"]["node"]) == (0, 1, 1)
    assert by_name["enp24s0f1"]["address"] == "0000:18:00.1" and by_name["enp24s0f1"]["recommended_node"] == 0
    assert by_name["gpu1"]["local_cpus"] == facts["nodes"][1]["cpus"]


def test_dgx_gpus_nics_and_nvme_on_their_nodes(tmp_path):
    topology = read(sysfs.dgx(), tmp_path)
    facts = topology.as_dict()
    assert facts["node_ids"] == list(range(8)) and len(facts["cpus"]) == 256
    assert facts["nodes"][3]["cpus"] == list(range(48, 64)) + list(range(176, 192))
    assert facts["distance_matrix"][0] == [10, 12, 12, 12, 32, 32, 32, 32]
    assert facts["distance_matrix"][5] == [32, 32, 32, 32, 12, 10, 12, 12]
    gpus = [device for device in facts["devices"] if device["kind"] == "gpu"]
    # The BMC's ASPEED VGA is no GPU: gpu0..gpu7 are the eight A100s in PCI address order.
    assert [gpu["names"] for gpu in gpus] == [[f"gpu{index}"] for index in range(8)]
    assert [(gpu["address"], gpu["recommended_node"]) for gpu in gpus] == list(sysfs.DGX_GPUS)
    nics = {device["names"][0]: device for device in facts["devices"] if device["kind"] == "nic"}
    assert {name: nic["node"] for name, nic in nics.items()} == {
        name: node for _address, node, name in sysfs.DGX_NICS + sysfs.DGX_STORAGE_NICS}
    assert nics["ibp225s0f0"]["class"] == "0x020700"
    assert [device["names"] for device in facts["devices"] if device["kind"] == "nvme"] == [
        [name] for _address, _node, name in sysfs.DGX_NVME]
    assert facts["nodes"][3]["local_hit_ratio"] == 0.88
    assert facts["nodes"][6]["local_hit_ratio"] is None  # no allocations yet: no ratio, not 0 or 1
    assert topology.find_device("gpu4").address == "0000:87:00.0"
    assert topology.find_device("0000:8d:00.0").names == ["enp141s0"]
    assert topology.find_device(sysfs.DGX_BMC_VGA[0]) is None


def test_vm_devices_are_on_no_node(tmp_path):
    facts = read(sysfs.vm(), tmp_path).as_dict()
    assert facts["node_ids"] == [0, 1] and facts["distance_matrix"] == [[10, 20], [20, 10]]
    # QEMU's emulated VGA is no GPU; the virtio-net interface is found through the virtio device.
    assert [(d["kind"], d["names"], d["node"], d["recommended_node"]) for d in facts["devices"]] == [
        ("nic", ["enp0s3"], None, None), ("nvme", ["nvme0"], None, None), ("gpu", ["gpu0"], None, None)]


def test_kernel_without_numa_support_is_one_node(tmp_path):
    facts = read(sysfs.without_numa(sysfs.workstation()), tmp_path).as_dict()
    assert facts["numa_supported"] is False
    assert facts["node_ids"] == [0] and facts["cpus"] == list(range(64))
    assert facts["nodes"][0]["memory"] is None and facts["nodes"][0]["local_hit_ratio"] is None
    assert {device["node"] for device in facts["devices"]} == {None}
    assert {device["recommended_node"] for device in facts["devices"]} == {0}


def test_memory_only_node(tmp_path):
    """A CXL memory expander: a node with memory and no CPUs."""
    topology = read(sysfs.workstation(cxl=True), tmp_path)
    facts = topology.as_dict()
    assert facts["nodes"][2]["cpus"] == [] and facts["nodes"][2]["has_memory"] is True
    assert facts["distance_matrix"][2] == [14, 24, 10]


def test_recommended_node_is_the_nearest_with_cpus_and_memory(tmp_path):
    topology = read(sysfs.workstation(cxl=True), tmp_path)
    gpu = topology.find_device("gpu1")
    gpu.node = 2  # as if it hung off the CPU-less node: node 0 is nearer to it (14) than node 1 (24)
    assert topology.recommended_node(gpu) == 0


def test_sparse_node_ids_keep_their_distances(tmp_path):
    """Distances are listed for online nodes in order: with nodes 0 and 2 online, column 2 is the second."""
    machine = sysfs.workstation()
    base = "devices/system/node"
    for name in ("online", "possible", "has_cpu", "has_memory", "has_normal_memory"):
        machine.files[f"{base}/{name}"] = "0,2\n"
    for path in [path for path in machine.files if path.startswith(f"{base}/node1/")]:
        machine.files[path.replace("/node1/", "/node2/")] = machine.files.pop(path)
    facts = read(machine, tmp_path).as_dict()
    assert facts["node_ids"] == [0, 2] and facts["distance_matrix"] == [[10, 21], [21, 10]]


def test_not_sysfs(tmp_path):
    with pytest.raises(NumaError, match="is not a sysfs tree"):
        Topology.read(str(tmp_path))


def test_malformed_attribute_is_a_clear_error(tmp_path):
    machine = sysfs.laptop()
    machine.files["devices/system/node/node0/cpulist"] = "zero\n"
    with pytest.raises(NumaError, match="cannot read the NUMA topology from .*'zero' is not a list"):
        read(machine, tmp_path)


# ---------------------------------------------------------------------------------- real machines
def test_capture_of_a_real_machine(tmp_path):
    """A 2-vCPU virtual machine: one node, virtio devices with numa_node -1, eth0 below virtio2."""
    topology = read(sysfs.real(), tmp_path)
    facts = topology.as_dict()
    assert facts["node_ids"] == [0] and facts["cpus"] == [0, 1]
    assert facts["nodes"][0]["memory"]["total_kb"] > 0
    assert 0 <= facts["nodes"][0]["local_hit_ratio"] <= 1
    assert [(d["kind"], d["names"], d["node"], d["recommended_node"]) for d in facts["devices"]] == [
        ("nic", ["eth0"], None, 0)]


def test_capture_of_the_test_fleets_4_node_vm(tmp_path):
    facts = read(sysfs.qemu_4node(), tmp_path).as_dict()
    assert facts["node_ids"] == [0, 1, 2, 3] and facts["cpus"] == [0, 1, 2, 3]
    assert [node["cpus"] for node in facts["nodes"]] == [[0], [1], [2], [3]]
    assert facts["distance_matrix"] == [[10, 20, 30, 20], [20, 10, 20, 30], [30, 20, 10, 20], [20, 30, 20, 10]]
    assert all(400 * 1024 < node["memory"]["total_kb"] <= 512 * 1024 for node in facts["nodes"])
    placed = [(d["kind"], d["names"], d["node"]) for d in facts["devices"] if d["node"] is not None]
    assert placed == [("nic", ["enp33s0"], 3), ("nvme", ["nvme0"], 1)]


@pytest.mark.skipif(not os.path.isdir("/sys/devices/system/node"), reason="this machine's kernel has no NUMA support")
def test_this_machines_sysfs():
    facts = Topology.read("/sys").as_dict()
    with open("/sys/devices/system/cpu/online", encoding="utf-8") as handle:
        online = parse_list(handle.read())
    assert facts["numa_supported"] is True
    assert facts["cpus"] == online
    assert set(os.sched_getaffinity(0)) <= set(facts["cpus"])
    assert facts["node_ids"] == sorted(int(name[4:]) for name in os.listdir("/sys/devices/system/node")
                                       if name.startswith("node") and name[4:].isdigit())
    for node in facts["nodes"]:
        assert node["memory"]["total_kb"] >= node["memory"]["free_kb"] > 0
        assert set(node["numastat"]) >= {"numa_hit", "numa_miss", "local_node", "other_node"}
        assert "2048kB" in node["hugepages"] or not node["hugepages"]
    row_lengths = {len(row) for row in facts["distance_matrix"]}
    assert row_lengths == {len(facts["node_ids"])}
    assert all(facts["distance_matrix"][i][i] == 10 for i in range(len(facts["node_ids"])))
    for device in facts["devices"]:
        assert device["kind"] in ("gpu", "nic", "nvme")
        assert device["node"] is None or device["node"] in facts["node_ids"]
    network_functions = []
    for address in sorted(os.listdir("/sys/bus/pci/devices")):
        with open(f"/sys/bus/pci/devices/{address}/class", encoding="utf-8") as handle:
            if handle.read().startswith("0x02"):
                network_functions.append(address)
    assert network_functions == [device["address"] for device in facts["devices"] if device["kind"] == "nic"]
