# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dgx profile on the 4-node VM: its services run near their devices, the ledger records where,
and numastat counters (`opdbus numa stats`) move where a placed service allocates.

A VM has no GPU and no NVIDIA packages (they come from NVIDIA's repositories), so a stand-in
nvidia-persistenced.service is installed: the profile finds it installed, holds it and places it
on opdbus_numa_node, as it would the real one.
"""

import json
import re
import subprocess

import pytest
from fleet import ansible_command, ansible_environment

HOST = "numa4"
STAND_IN = """[Unit]
Description=%N (stand-in: writes 32 MiB, then sleeps)

[Service]
ExecStart=/usr/bin/python3 -c "import time; block = b'x' * (32 << 20); time.sleep(86400)"

[Install]
WantedBy=multi-user.target
"""
SERVICES = ("nvidia-persistenced.service", "storage-client.service", "scratch-writer.service")
PLAYBOOK = """---
- name: The dgx profile on the 4-node VM
  hosts: numa4
  become: true
  gather_facts: false
  roles:
    - role: opdbus.fleet.dgx
      vars:
        opdbus_numa_node: 2
        # The stand-in's package does not exist; the VM image carries the role's own packages.
        opdbus_install_packages: false
        opdbus_units:
          storage-client.service: {active_state: active, enabled: true}
          scratch-writer.service: {active_state: active, enabled: true}
        opdbus_numa_units:
          storage-client.service: {strategy: local-node, device: enp33s0}
          scratch-writer.service: {strategy: local-node, device: nvme0}
"""
EXPECTED_CPUS = {"nvidia-persistenced.service": "2", "storage-client.service": "3", "scratch-writer.service": "1"}


def rollout(fleet, playbook):
    result = subprocess.run([ansible_command("ansible-playbook"), "-i", fleet.inventory_file, str(playbook)],
                            env=ansible_environment(), capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return re.search(r"numa4\s*: ok=\d+\s+changed=(\d+)", result.stdout).group(1)


def numa_stats(fleet):
    return {node["id"]: node["numastat"] for node in json.loads(fleet.ssh(HOST, "opdbus numa stats --json").stdout)}


@pytest.fixture(scope="module")
def profile(fleet, tmp_path_factory):
    for unit in SERVICES:
        fleet.ssh(HOST, f"cat > /etc/systemd/system/{unit}", input=STAND_IN)
    fleet.ssh(HOST, "systemctl daemon-reload")
    playbook = tmp_path_factory.mktemp("dgx") / "dgx.yml"
    playbook.write_text(PLAYBOOK)
    return playbook, rollout(fleet, playbook)


def test_the_profile_runs_each_service_near_its_device(fleet, profile):
    assert int(profile[1]) > 0
    for unit, cpus in EXPECTED_CPUS.items():
        pid = fleet.ssh(HOST, f"systemctl show -p MainPID --value {unit}").stdout.strip()
        status = fleet.ssh(HOST, f"cat /proc/{pid}/status").stdout
        assert re.search(rf"^Cpus_allowed_list:\s+{cpus}$", status, re.MULTILINE), (unit, status)


def test_the_ledger_records_each_placement(fleet, profile):
    entries = fleet.run_module(HOST, "opdbus.fleet.opdbus_ledger_info", {"limit": 1000})["entries"]
    placed = {}
    for entry in entries:
        if entry["action"] == "numa":
            placed.update({unit["unit"]: unit["placement"] for unit in entry["changes"]["units"]})
    assert placed["nvidia-persistenced.service"]["nodes"] == [2]
    assert placed["storage-client.service"]["nodes"] == [3]
    assert placed["scratch-writer.service"]["nodes"] == [1]


def test_numastat_counters_move_on_the_node_a_placed_service_allocates_on(fleet, profile):
    # numa_hit counts allocations, and a transparent huge page is one: with them off, each 4 KiB page counts.
    fleet.ssh(HOST, "echo never > /sys/kernel/mm/transparent_hugepage/enabled")
    before = numa_stats(fleet)
    # Under TCG Python takes seconds to start: wait until the new process holds its 32 MiB.
    fleet.ssh(HOST, "systemctl restart storage-client.service && for i in $(seq 150); do "
              "pid=$(systemctl show -p MainPID --value storage-client.service); "
              "[ $(awk '/^VmRSS/ {print $2}' /proc/$pid/status) -gt 33000 ] && exit 0; sleep 0.2; done; exit 1", timeout=60)
    after = numa_stats(fleet)
    moved = {node: after[node]["numa_hit"] - before[node]["numa_hit"] for node in after}
    print(f"emulated machine (QEMU TCG, 4 nodes): numa_hit allocations per node (4 KiB pages, THP off) while storage-client.service "
          f"(node 3) wrote 32 MiB: {moved}")
    assert moved[3] >= (32 << 20) // 4096 and moved[3] == max(moved.values()), moved


def test_a_second_rollout_changes_nothing(fleet, profile):
    assert rollout(fleet, profile[0]) == "0"
