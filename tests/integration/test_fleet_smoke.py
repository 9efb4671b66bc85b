# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test fleet is real: separate systemd hosts with their own system bus, reached over SSH."""

import json
import os

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files", "dbus_probe.py")
THROWAWAY_UNIT = "opdbus-smoke.service"


def probe(fleet, host, *args):
    with open(PROBE) as handle:
        result = fleet.ssh(host, "python3 - " + " ".join(args), input=handle.read())
    return json.loads(result.stdout)


def test_boots_three_hosts_from_one_cached_rootfs_in_under_30s(fleet):
    state = fleet.state()
    assert len(state["hosts"]) == 3
    assert state["boot_seconds"] < 30, f"boot took {state['boot_seconds']} s"


def test_hosts_are_distinct_machines(fleet):
    identities = {host: fleet.ssh(host, "cat /etc/machine-id; hostname").stdout.split() for host in fleet.hosts()}
    machine_ids = {ident[0] for ident in identities.values()}
    assert len(machine_ids) == len(identities), identities
    assert all(ident[1] == host for host, ident in identities.items()), identities


def test_reads_unit_state_over_the_hosts_system_bus(fleet):
    for host in fleet.hosts():
        states = probe(fleet, host, "read", "dbus.service", "ssh.service")
        assert states["dbus.service"]["ActiveState"] == "active"
        assert states["ssh.service"]["ActiveState"] == "active"
        assert states["ssh.service"]["UnitFileState"] == "enabled"
        # systemctl on the host agrees with what came over D-Bus
        shown = fleet.ssh(host, "systemctl show -p UnitFileState --value dbus.service").stdout.strip()
        assert states["dbus.service"]["UnitFileState"] == shown


def test_starts_and_stops_a_throwaway_unit(fleet):
    for host in fleet.hosts():
        fleet.ssh(host, f"printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > /etc/systemd/system/{THROWAWAY_UNIT}")
        steps = probe(fleet, host, "cycle", THROWAWAY_UNIT)
        assert steps["after_reload"]["ActiveState"] == "inactive"
        assert steps["after_start"]["ActiveState"] == "active"
        assert steps["after_start"]["SubState"] == "running"
        assert steps["after_stop"]["ActiveState"] == "inactive"
        assert fleet.ssh(host, f"systemctl is-active {THROWAWAY_UNIT}", check=False).stdout.strip() == "inactive"


def test_btrfs_is_mounted_where_asked(fleet):
    assert fleet.ssh("node1", "findmnt -n -o FSTYPE /mnt/btrfs").stdout.strip() == "btrfs"
    fleet.ssh("node1", "btrfs subvolume create /mnt/btrfs/smoke && btrfs subvolume delete /mnt/btrfs/smoke")
    assert fleet.ssh("node2", "findmnt -n /mnt/btrfs", check=False).returncode != 0


def test_inventory_works_for_ansible(ansible):
    result = ansible("ansible", "all", "-m", "ansible.builtin.ping", "-o")
    assert result.stdout.count("SUCCESS") == 3, result.stdout
