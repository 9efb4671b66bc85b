# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests on virtual-machine hosts of the test fleet (QEMU, a real kernel), where containers cannot show it."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fleet"))


@pytest.fixture(scope="session", autouse=True)
def requires_root():
    if os.geteuid() != 0:
        pytest.fail("VM tests boot QEMU on the fleet's bridge and need root; run `make vm` as root")
