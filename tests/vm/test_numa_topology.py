# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""opdbus_numa_info on 2- and 4-node virtual machines reports the topology QEMU was given."""

import pytest
import vm
from conftest import TOPOLOGIES


@pytest.mark.parametrize("host", sorted(TOPOLOGIES))
def test_numa_info_reports_the_nodes_cpus_memory_distances_and_devices_qemu_was_given(fleet, host):
    given = vm.parse_numa(TOPOLOGIES[host])
    info = fleet.run_module(host, "opdbus.fleet.opdbus_numa_info", {})
    assert not info.get("failed"), info
    assert info["node_ids"] == list(range(given.nodes))
    assert info["distance_matrix"] == vm.distances(given.nodes)
    for node in info["nodes"]:
        first = node["id"] * given.cpus_per_node
        assert node["cpus"] == list(range(first, first + given.cpus_per_node)), node
        # The kernel keeps part of each node's memory for itself (node 0 also holds the kernel image).
        given_kb = given.memory_mib * 1024
        assert 0.8 * given_kb <= node["memory"]["total_kb"] <= given_kb, node["memory"]
    placed = sorted((device["kind"], device["node"]) for device in info["devices"] if device["node"] is not None)
    assert placed == sorted(given.devices), info["devices"]


def test_a_topology_that_qemu_cannot_be_given_is_refused_before_anything_starts():
    for spec in ("9x1", "2x0", "2x1:128M", "two", "2x1,nic@2", "2x1,gpu@0"):
        with pytest.raises(ValueError, match="NUMA topology"):
            vm.parse_numa(spec)
