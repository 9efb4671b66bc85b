# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement of units on the nodes of real layouts: strategies, degradation, validation, drop-in files."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._numa import placement
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.placement import (
    DropinSet, check_systemd_version, check_unit_names, place_units, plan_placements,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.topology import NumaError, Topology
from ansible_collections.opdbus.fleet.tests.unit.fixtures.numa import sysfs
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.units import UnitStatus

HEADER = ("# CPUAffinity= and NUMAMask= add up across the unit and its drop-ins: the empty\n"
          "# assignments discard earlier values, so this file alone decides.\n")


@pytest.fixture
def topology(tmp_path, request):
    machine = getattr(request, "param", "dgx")
    return Topology.read(sysfs.MACHINES[machine]().write(tmp_path / machine))


def unit_status(name, load_state="loaded"):
    """A unit as ListUnitsByNames reports it (data for the planner, not a stand-in for systemd)."""
    return UnitStatus(name, load_state, "active", "running", "/org/freedesktop/systemd1/unit/x", "enabled")


def place(topology, spec, unit="app.service"):
    return plan_placements(topology, {unit: spec}, {unit: unit_status(unit)})[unit]


def summary(placement):
    return placement.nodes, placement.cpus, placement.policy, placement.mask


# ---------------------------------------------------------------------------------- strategies
def test_local_node_near_a_gpu(topology):
    placement = place(topology, {"strategy": "local-node", "device": "gpu0"})
    assert summary(placement) == ([3], sysfs.dgx_node_cpus(3), "local", None)
    assert placement.notes == []
    assert placement.dropin() == (
        "# Written by opdbus.fleet.opdbus_numa (strategy local-node, nodes 3).\n" + HEADER
        + "[Service]\nCPUAffinity=\nCPUAffinity=48-63,176-191\nNUMAPolicy=local\nNUMAMask=\n")


@pytest.mark.parametrize("device, node", [("enp141s0", 7), ("0000:b7:00.0", 5), ("ibp225s0f1", 6), ("nvme1", 2)])
def test_local_node_near_a_nic_address_or_nvme(topology, device, node):
    assert place(topology, {"strategy": "local-node", "device": device}).nodes == [node]


def test_bind_to_a_socket(topology):
    placement = place(topology, {"strategy": "bind", "nodes": "0-3"})
    assert summary(placement) == ([0, 1, 2, 3], list(range(64)) + list(range(128, 192)), "bind", [0, 1, 2, 3])
    assert placement.dropin().endswith(
        "[Service]\nCPUAffinity=\nCPUAffinity=0-63,128-191\nNUMAPolicy=bind\nNUMAMask=\nNUMAMask=0-3\n")


def test_preferred_one_node_given_as_a_number(topology):
    placement = place(topology, {"strategy": "preferred", "nodes": 5})
    assert summary(placement) == ([5], sysfs.dgx_node_cpus(5), "preferred", [5])


def test_preferred_near_a_device(topology):
    assert summary(place(topology, {"strategy": "preferred", "device": "gpu2"}))[2:] == ("preferred", [1])


def test_interleave_defaults_to_every_node_with_memory(topology):
    placement = place(topology, {"strategy": "interleave"})
    assert summary(placement) == (list(range(8)), list(range(256)), "interleave", list(range(8)))
    assert placement.dropin().endswith("CPUAffinity=0-255\nNUMAPolicy=interleave\nNUMAMask=\nNUMAMask=0-7\n")


def test_interleave_over_given_nodes(topology):
    assert summary(place(topology, {"strategy": "interleave", "nodes": [4, 6]}))[3] == [4, 6]


def test_default_resets_everything(topology):
    placement = place(topology, {"strategy": "default"})
    assert summary(placement) == ([], [], "default", None)
    assert placement.dropin().endswith("[Service]\nCPUAffinity=\nNUMAPolicy=default\nNUMAMask=\n")


def test_cpus_narrow_the_placement(topology):
    placement = place(topology, {"strategy": "bind", "nodes": [3], "cpus": "48-51"})
    assert summary(placement) == ([3], [48, 49, 50, 51], "bind", [3])
    assert summary(place(topology, {"strategy": "default", "cpus": [0, 255]}))[1:] == ([0, 255], "default", None)


@pytest.mark.parametrize("unit, section", [("app.socket", "Socket"), ("srv-data.mount", "Mount"), ("dev-sdb1.swap", "Swap")])
def test_exec_section_follows_the_unit_type(topology, unit, section):
    assert f"\n[{section}]\n" in place(topology, {"strategy": "bind", "nodes": [0]}, unit=unit).dropin()


def test_memory_only_node_is_interleaved_but_runs_nothing(tmp_path):
    topology = Topology.read(sysfs.workstation(cxl=True).write(tmp_path))
    placement = place(topology, {"strategy": "interleave"})
    assert summary(placement) == ([0, 1, 2], list(range(64)), "interleave", [0, 1, 2])
    with pytest.raises(NumaError, match=r'^units\["app.service"\].nodes: node 2 has no CPUs to run the unit on$'):
        place(topology, {"strategy": "local-node", "nodes": [2]})


def test_cpu_only_node_cannot_hold_memory(tmp_path):
    machine = sysfs.workstation()
    machine.files["devices/system/node/has_memory"] = "0\n"
    topology = Topology.read(machine.write(tmp_path))
    with pytest.raises(NumaError, match=r"nodes: node 1 has no memory for NUMAPolicy=bind$"):
        place(topology, {"strategy": "bind", "nodes": [0, 1]})
    assert place(topology, {"strategy": "local-node", "nodes": [1]}).nodes == [1]  # runs there, memory elsewhere
    assert place(topology, {"strategy": "interleave"}).mask == [0]


# ---------------------------------------------------------------------------------- degradation
@pytest.mark.parametrize("topology", ["laptop"], indirect=True)
def test_one_node_host_places_with_a_note(topology):
    placement = place(topology, {"strategy": "bind", "nodes": [0], "cpus": "1"})
    assert summary(placement) == ([0], [1], "bind", [0])
    assert placement.notes == ["this host has one NUMA node, so NUMAPolicy=bind changes nothing; CPUAffinity= still applies"]
    near_gpu = place(topology, {"strategy": "local-node", "device": "gpu1"})
    assert summary(near_gpu) == ([0], list(range(8)), "local", None)
    assert near_gpu.notes[0] == "gpu1 (0000:01:00.0) reports no NUMA node; node 0 is this host's only node"
    assert place(topology, {"strategy": "default"}).notes == []


@pytest.mark.parametrize("topology", ["vm"], indirect=True)
@pytest.mark.parametrize("strategy", ["local-node", "bind", "preferred"])
def test_device_on_no_node_of_a_multi_node_host_is_not_placed(topology, strategy):
    placement = place(topology, {"strategy": strategy, "device": "gpu0"})
    assert summary(placement) == ([], [], "default", None)
    assert placement.notes == ["gpu0 (0000:00:05.0) is on no particular NUMA node (numa_node is -1): "
                               "the unit is not placed on a node"]
    assert placement.dropin().endswith("CPUAffinity=\nNUMAPolicy=default\nNUMAMask=\n")


def test_kernel_without_numa_writes_only_the_cpu_affinity(tmp_path):
    topology = Topology.read(sysfs.without_numa(sysfs.workstation()).write(tmp_path))
    placement = place(topology, {"strategy": "local-node", "device": "enp24s0f0", "cpus": "0-7"})
    assert summary(placement) == ([0], list(range(8)), None, None)
    assert placement.dropin().endswith("[Service]\nCPUAffinity=\nCPUAffinity=0-7\n")
    assert "this kernel has no NUMA support: only CPUAffinity= is written" in placement.notes


@pytest.mark.parametrize("topology", ["real"], indirect=True)
def test_real_machine_capture(topology):
    placement = place(topology, {"strategy": "local-node", "device": "eth0"})
    assert summary(placement) == ([0], [0, 1], "local", None)
    assert len(placement.notes) == 2


@pytest.mark.parametrize("topology", ["qemu_4node"], indirect=True)
def test_the_4_node_vm_capture_places_near_its_nic_and_nvme(topology):
    assert summary(place(topology, {"strategy": "local-node", "device": "enp33s0"})) == ([3], [3], "local", None)
    assert summary(place(topology, {"strategy": "bind", "device": "nvme0"})) == ([1], [1], "bind", [1])
    assert summary(place(topology, {"strategy": "interleave"})) == ([0, 1, 2, 3], [0, 1, 2, 3], "interleave", [0, 1, 2, 3])


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("spec, message", [
    ({"strategy": "bind", "nodes": [8]}, '.nodes: node 8 does not exist on this host (nodes: 0-7)'),
    ({"strategy": "bind", "nodes": "6-9"}, '.nodes: node 8-9 does not exist on this host (nodes: 0-7)'),
    ({"strategy": "local-node", "device": "gpu8"}, ".device: no device 'gpu8' on this host (known: 0000:07:00.0 gpu0, "),
    ({"strategy": "local-node", "device": "0000:c2:00.0"}, ".device: no device '0000:c2:00.0' on this host"),
    ({"strategy": "bind", "nodes": [3], "cpus": "250-260"}, ".cpus: CPU 256-260 is not on this host (CPUs: 0-255)"),
    ({"strategy": "bind", "nodes": [3], "cpus": "0-3"}, ".cpus: CPU 0-3 is not on node 3 (its CPUs: 48-63,176-191)"),
    ({"strategy": "bind"}, ".nodes: strategy bind needs nodes or a device"),
    ({"strategy": "local-node"}, ".nodes: strategy local-node needs nodes or a device"),
    ({"strategy": "preferred", "cpus": "1"}, ".nodes: strategy preferred needs nodes or a device"),
    ({"strategy": "preferred", "nodes": [1, 2]}, ".nodes: strategy preferred takes exactly one node"),
    ({"strategy": "default", "nodes": [1]}, ".nodes: strategy default places the unit on no node; leave it out"),
    ({"strategy": "default", "device": "gpu0"}, ".device: strategy default places the unit on no node"),
    ({"strategy": "bind", "nodes": [1], "device": "gpu0"}, ".device: give nodes or device, not both"),
    ({"strategy": "spread"}, ".strategy: expected one of local-node, bind, preferred, interleave, default, got 'spread'"),
    ({"nodes": [1]}, ".strategy: expected one of local-node, bind, preferred, interleave, default, got None"),
    ({"strategy": "bind", "node": [1]}, ".node: unknown field (known: strategy, nodes, device, cpus)"),
    ({"strategy": "bind", "nodes": []}, ".nodes: the list is empty"),
    ({"strategy": "bind", "nodes": [True]}, ".nodes: expected a number, a list of numbers or a list such as 0-3,8-11"),
    ({"strategy": "bind", "nodes": [-1]}, ".nodes: -1 is negative"),
    ({"strategy": "bind", "nodes": [0], "cpus": "0-3,x"}, ".cpus: '0-3,x' is not a list such as 0-3,8-11"),
    ("bind", ': expected a mapping with strategy and nodes, device or cpus'),
])
def test_bad_input_names_the_unit_and_field(topology, spec, message):
    with pytest.raises(NumaError) as error:
        place(topology, spec)
    assert str(error.value).startswith('units["app.service"]' + message), str(error.value)


@pytest.mark.parametrize("unit, message", [
    ("app.timer", 'units["app.timer"]: only units that run processes can be placed (service, socket, mount, swap)'),
    ("bad name.service", 'units["bad name.service"]: invalid unit name'),
])
def test_units_that_cannot_be_placed_are_refused_before_systemd_is_asked(unit, message):
    with pytest.raises(NumaError) as error:
        check_unit_names({"app.service": {}, unit: {}})
    assert str(error.value).startswith(message)


def test_unit_that_does_not_exist(topology):
    live = {"gone.service": unit_status("gone.service", load_state="not-found")}
    with pytest.raises(NumaError, match=r'^units\["gone.service"\]: no such unit on this host'):
        plan_placements(topology, {"gone.service": {"strategy": "default"}}, live)


# ---------------------------------------------------------------------------------- drop-in files
def write_all(dropins):
    for dropin in dropins.changed:
        dropin.write()


def test_dropin_written_atomically_then_unchanged_then_removed(tmp_path):
    text = "[Service]\nCPUAffinity=\nCPUAffinity=1\n"
    first = DropinSet({"app.service": text}, "50-numa.conf", unit_dir=str(tmp_path))
    assert [dropin.unit for dropin in first.changed] == ["app.service"]
    assert first.changed[0].diff() == {"before_header": str(tmp_path / "app.service.d/50-numa.conf"),
                                       "after_header": str(tmp_path / "app.service.d/50-numa.conf"),
                                       "before": "", "after": text}
    os.umask(0o077)  # the file and the directory systemd reads must not inherit a restrictive umask
    try:
        write_all(first)
    finally:
        os.umask(0o022)
    path = tmp_path / "app.service.d" / "50-numa.conf"
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert os.listdir(path.parent) == ["50-numa.conf"]  # no temporary file left behind

    assert DropinSet({"app.service": text}, "50-numa.conf", unit_dir=str(tmp_path)).changed == []

    removal = DropinSet({"app.service": None}, "50-numa.conf", unit_dir=str(tmp_path))
    assert removal.changed[0].diff()["after"] == ""
    write_all(removal)
    assert not path.exists() and path.parent.is_dir()
    assert DropinSet({"app.service": None}, "50-numa.conf", unit_dir=str(tmp_path)).changed == []


def test_removing_a_dropin_someone_else_removed_is_done(tmp_path):
    (tmp_path / "app.service.d").mkdir()
    (tmp_path / "app.service.d" / "50-numa.conf").write_text("x\n")
    removal = DropinSet({"app.service": None}, "50-numa.conf", unit_dir=str(tmp_path))
    os.unlink(tmp_path / "app.service.d" / "50-numa.conf")
    write_all(removal)
    assert os.listdir(tmp_path / "app.service.d") == []


def test_digests_are_what_sha256sum_prints(tmp_path):
    text = "[Service]\nCPUAffinity=\nCPUAffinity=1\n# \u00e9\n"
    path = tmp_path / "f"
    path.write_bytes(text.encode("utf-8"))
    assert placement.text_sha256(text) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert placement.text_sha256(None) is None


def test_unreadable_dropin_fails_before_anything_is_written(tmp_path):
    (tmp_path / "b.service.d").write_text("a file where the directory should be")
    with pytest.raises(NumaError, match=r'^units\["b.service"\]: cannot read .*/b.service.d/50-numa.conf: Not a directory$'):
        DropinSet({"a.service": "x\n", "b.service": "y\n"}, "50-numa.conf", unit_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["b.service.d"]


def test_dropin_that_is_not_text_is_refused_by_name(tmp_path):
    (tmp_path / "b.service.d").mkdir()
    (tmp_path / "b.service.d" / "50-numa.conf").write_bytes(b"\xff\xfe")
    with pytest.raises(NumaError, match=r'^units\["b.service"\]: cannot read .*/50-numa.conf: it is not UTF-8 text$'):
        DropinSet({"b.service": "y\n"}, "50-numa.conf", unit_dir=str(tmp_path))


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the file system is full; free space and retry"),
                                         (errno.EROFS, "the file system is mounted read-only")])
def test_write_failure_names_the_unit_and_says_what_to_do(tmp_path, monkeypatch, code, words):
    def failing(source, destination):
        if "b.service" in destination:
            raise OSError(code, os.strerror(code))
        os.rename(source, destination)

    monkeypatch.setattr(placement.os, "replace", failing)
    dropins = DropinSet({"a.service": "x\n", "b.service": "y\n"}, "50-numa.conf", unit_dir=str(tmp_path))
    first, second = dropins.changed
    first.write()
    with pytest.raises(NumaError, match=rf'^units\["b.service"\]: cannot write .*/b.service.d/50-numa.conf: {words}$'):
        second.write()
    assert (tmp_path / "a.service.d" / "50-numa.conf").read_text() == "x\n"
    assert os.listdir(tmp_path / "b.service.d") == []  # the temporary file is gone


# ---------------------------------------------------------------------------------- systemd
@pytest.mark.parametrize("version, accepted", [(239, False), (242, False), (243, True), (252, True)])
def test_systemd_older_than_243_is_refused(version, accepted):
    if accepted:
        check_systemd_version(version)
    else:
        with pytest.raises(NumaError, match=f"systemd {version} on this host ignores NUMAPolicy="):
            check_systemd_version(version)


# ---------------------------------------------------------------------------------- a task's options
@pytest.mark.parametrize("options, message", [
    ({"dropin_name": "numa"}, r"^dropin_name: 'numa' must be a file name ending in \.conf"),
    ({"dropin_name": "../x.conf"}, r"^dropin_name: '\.\./x\.conf' must be a file name"),
    ({"units": {"app.timer": {"strategy": "default"}}}, r'^units\["app.timer"\]: only units that run processes'),
    ({"units": {7: {"strategy": "default"}}}, r"^units\[\"7\"\]: a unit name must be a non-empty string"),
    ({"job_timeout": 0}, r"^job_timeout: 0 is not a number of seconds to wait \(1 or more\)"),
])
def test_bad_options_are_refused_before_the_lock_and_before_systemd_is_asked(tmp_path, options, message):
    params = dict(units={"app.service": {"strategy": "default"}}, state="present", restart=True,
                  dropin_name=placement.DEFAULT_DROPIN, sysfs_root=str(tmp_path), job_timeout=90, lock_timeout=5)
    params.update(options)
    ledger = Ledger(str(tmp_path / "ledger"))
    # No client: a refusal must come before the first question to systemd.
    with pytest.raises(NumaError, match=message) as refused:
        place_units(None, ledger, params, False, pytest.fail)
    assert refused.value.details == {"changed": False, "entry": None}
    assert not os.path.exists(ledger.directory)
