# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""opdbus_numa places running services on the 4-node VM, and the kernel enforces it on their new processes."""

import re

import pytest

HOST = "numa4"
# Each probe writes 32 MiB (so its pages exist), then sleeps.
PROBE_UNIT = """[Unit]
Description=NUMA placement probe %i

[Service]
ExecStart=/usr/bin/python3 -c "import time; block = b'x' * (32 << 20); time.sleep(86400)"
"""
PLACEMENTS = {  # unit: (placement, CPUs allowed, numa_maps policy, nodes holding its pages)
    "numa-probe@local.service": ({"strategy": "local-node", "device": "enp33s0"}, "3", "local", {3}),
    "numa-probe@bind.service": ({"strategy": "bind", "nodes": [1]}, "1", "bind:1", {1}),
    "numa-probe@preferred.service": ({"strategy": "preferred", "nodes": [2]}, "2", "prefer:2", {2}),
    "numa-probe@interleave.service": ({"strategy": "interleave"}, "0-3", "interleave:0-3", {0, 1, 2, 3}),
}


def main_pid(fleet, unit):
    return int(fleet.ssh(HOST, f"systemctl show -p MainPID --value {unit}").stdout)


def largest_anonymous_mapping(fleet, pid):
    """(policy, {node: pages}) of the process's largest anonymous mapping: the probe's 32 MiB."""
    rows = [line.split() for line in fleet.ssh(HOST, f"cat /proc/{pid}/numa_maps").stdout.splitlines() if "anon=" in line]
    fields = max(rows, key=lambda row: int(next(f for f in row if f.startswith("anon="))[5:]))
    pages = {int(match[1]): int(match[2]) for match in (re.fullmatch(r"N(\d+)=(\d+)", f) for f in fields) if match}
    return fields[1], pages


@pytest.fixture(scope="module")
def placed(fleet):
    fleet.ssh(HOST, "cat > /etc/systemd/system/numa-probe@.service && systemctl daemon-reload && "
              f"systemctl start {' '.join(PLACEMENTS)}", input=PROBE_UNIT)
    before = {unit: main_pid(fleet, unit) for unit in PLACEMENTS}
    first = fleet.run_module(HOST, "opdbus.fleet.opdbus_numa",
                             {"units": {unit: spec[0] for unit, spec in PLACEMENTS.items()}, "restart": True})
    return before, first


def test_the_placement_restarts_the_running_services_and_is_recorded(fleet, placed):
    before, first = placed
    assert first.get("changed") and not first.get("failed"), first
    for unit in PLACEMENTS:
        assert main_pid(fleet, unit) not in (0, before[unit]), f"{unit} was not restarted"
    entries = fleet.run_module(HOST, "opdbus.fleet.opdbus_ledger_info", {"limit": 1000})["entries"]
    assert entries[-1]["action"] == "numa"


@pytest.mark.parametrize("unit", sorted(PLACEMENTS))
def test_the_kernel_runs_each_new_process_where_it_was_placed(fleet, placed, unit):
    _placement, cpus, policy, nodes = PLACEMENTS[unit]
    pid = main_pid(fleet, unit)
    status = fleet.ssh(HOST, f"cat /proc/{pid}/status").stdout
    assert re.search(rf"^Cpus_allowed_list:\s+{re.escape(cpus)}$", status, re.MULTILINE), status
    mapped_policy, pages = largest_anonymous_mapping(fleet, pid)
    assert mapped_policy == policy
    assert set(pages) == nodes, pages
    if len(nodes) > 1:  # interleaved: every node holds a fair share
        assert min(pages.values()) > 0.15 * sum(pages.values()), pages


def test_a_second_run_changes_nothing_and_restarts_nothing(fleet, placed):
    running = {unit: main_pid(fleet, unit) for unit in PLACEMENTS}
    second = fleet.run_module(HOST, "opdbus.fleet.opdbus_numa",
                              {"units": {unit: spec[0] for unit, spec in PLACEMENTS.items()}, "restart": True})
    assert second.get("changed") is False, second
    assert {unit: main_pid(fleet, unit) for unit in PLACEMENTS} == running
