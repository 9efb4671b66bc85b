# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs every role-style integration target under targets/ (a tasks/main.yml that asserts its outcomes).

Targets named setup_* are dependencies, not tests. Playbook-style targets (a playbook.yml) are
driven by their own test_*.py file, which prepares what they need. A target runs on the hosts its fleet_hosts file
names (one host name per line), else on node2 so that node1 stays free for BTRFS tests.
"""

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS_DIR = os.path.join(HERE, "targets")
TARGETS = sorted(name for name in os.listdir(TARGETS_DIR)
                 if not name.startswith("setup_") and os.path.isfile(os.path.join(TARGETS_DIR, name, "tasks", "main.yml")))


def target_hosts(name):
    listing = os.path.join(TARGETS_DIR, name, "fleet_hosts")
    if os.path.exists(listing):
        with open(listing) as handle:
            hosts = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        if hosts:
            return ",".join(hosts)
    return "node2"


@pytest.mark.parametrize("target", TARGETS)
def test_target(ansible, target):
    result = ansible("ansible-playbook", os.path.join(HERE, "run_target.yml"),
                     "-e", f"target={target}", "-e", f"target_hosts={target_hosts(target)}")
    assert "failed=0" in result.stdout and "unreachable=0" in result.stdout, result.stdout
