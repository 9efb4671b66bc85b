# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests on virtual-machine hosts of the test fleet (QEMU, a real kernel), where containers cannot show it."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fleet"))

from fleet import booted_fleet  # noqa: E402

# A 2-node VM, and a 4-node one with a NIC on node 3 and an NVMe disk on node 1.
TOPOLOGIES = {"numa2": "2x1", "numa4": "4x1,nic@3,nvme@1"}


@pytest.fixture(scope="session", autouse=True)
def requires_root():
    if os.geteuid() != 0:
        pytest.fail("VM tests boot QEMU on the fleet's bridge and need root; run `make vm` as root")


@pytest.fixture(scope="session")
def fleet():
    with booted_fleet(os.environ.get("OPDBUS_VM_FLEET_NAME", "vmtest"), 0, vms=TOPOLOGIES) as vm_fleet:
        state = vm_fleet.state()
        accelerators = sorted({info["accelerator"] for info in state["hosts"].values()})
        print(f"VM fleet booted in {state['boot_seconds']} s under {', '.join(accelerators).upper()}")
        yield vm_fleet
