# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After converge: the laptop profile holds, as systemd, the host command and the guide's health check see it."""

import json


def test_the_profile_units_hold(host):
    assert host.service("NetworkManager").is_running and host.service("NetworkManager").is_enabled
    # No Bluetooth adapter in a test host: enabled, and skipped by its ConditionPathIsDirectory=.
    assert host.service("bluetooth").is_enabled
    assert host.run("systemctl show -p ConditionResult --value bluetooth.service").stdout.strip() == "no"
    assert not host.service("cups").is_running


def test_op_dbus_service_and_the_snapshot_timer(host):
    assert host.run("systemctl is-active op-dbus.service").stdout.strip() == "active"
    assert host.run("systemctl is-active op-dbus-snapshot.timer").stdout.strip() == "active"
    calendar = host.run("systemctl show -p TimersCalendar --value op-dbus-snapshot.timer").stdout
    assert "OnCalendar=*-*-* *:00:00" in calendar  # hourly
    timer = host.file("/etc/systemd/system/op-dbus-snapshot.timer").content_string
    assert "Persistent=true" in timer and "RandomizedDelaySec=600" in timer


def test_state_file_equals_current_json(host):
    desired = json.loads(host.file("/etc/op-dbus/state.json").content_string)
    applied = json.loads(host.file("/var/lib/op-dbus/blockchain/state/current.json").content_string)
    assert desired == applied
    declared = set(desired["plugins"]["systemd"]["units"])
    assert declared >= {"NetworkManager.service", "bluetooth.service", "cups.service", "op-dbus.service"}


def test_the_settings_hold_the_profile_retention(host):
    settings = json.loads(host.file("/etc/op-dbus/config.json").content_string)
    assert settings["retention"] == {"hourly": 5, "daily": 3, "weekly": 2, "quarterly": 2, "max_total": 12}
    assert settings["snapshot_interval"] == "hourly"


def test_opdbus_apply_check_has_nothing_to_do(host):
    result = host.run("opdbus apply --check")
    assert result.rc == 0, result.stdout + result.stderr
    assert "nothing to do" in result.stdout


def test_the_ledger_verifies(host):
    result = host.run("opdbus --json ledger verify")
    assert result.rc == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["valid"] is True


def test_the_guides_health_check_passes_once_the_timer_ran(host):
    host.run_test("systemctl start op-dbus-snapshot.service")
    result = host.run("/usr/local/bin/opdbus-health.sh")
    assert result.rc == 0, result.stdout
    assert "\u2713 Service running" in result.stdout
    assert "\u2713 Recent snapshot found" in result.stdout


def test_the_guides_commands_work(host):
    snapshots = host.run("op-dbus blockchain snapshots")
    assert snapshots.rc == 0 and "snapshot" in snapshots.stdout
    numa = host.run("op-dbus cache numa-info")
    assert numa.rc == 0 and numa.stdout.startswith("NUMA Topology") and "Strategy: local-node" in numa.stdout
    assert "NUMA topology detected: 1 nodes" in host.run("journalctl -u op-dbus --no-pager").stdout
