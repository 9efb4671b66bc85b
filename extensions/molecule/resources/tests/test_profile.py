# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks every profile scenario runs after converge (molecule.yml lists this file under the verifier's
additional_files_or_dirs); what the profile declares comes from the scenario's ``profile_expect``."""

import json

import pytest


@pytest.fixture
def profile(host):
    return host.ansible.get_variables()["profile_expect"]


def test_op_dbus_service_and_the_snapshot_timer(host, profile):
    assert host.run("systemctl is-active op-dbus.service").stdout.strip() == "active"
    assert host.run("systemctl is-active op-dbus-snapshot.timer").stdout.strip() == "active"
    calendar = host.run("systemctl show -p TimersCalendar --value op-dbus-snapshot.timer").stdout
    assert f"OnCalendar={profile['calendar']}" in calendar, calendar
    timer = host.file("/etc/systemd/system/op-dbus-snapshot.timer").content_string
    assert "Persistent=true" in timer and f"RandomizedDelaySec={profile['delay']}" in timer
    loaded = host.run("systemctl show -p Persistent -p FixedRandomDelay op-dbus-snapshot.timer").stdout.split()
    assert sorted(loaded) == ["FixedRandomDelay=yes", "Persistent=yes"], loaded


def test_state_file_equals_current_json(host, profile):
    desired = json.loads(host.file("/etc/op-dbus/state.json").content_string)
    applied = json.loads(host.file("/var/lib/op-dbus/blockchain/state/current.json").content_string)
    assert desired == applied
    declared = set(desired["plugins"]["systemd"]["units"])
    assert declared >= set(profile["units"]) | {"op-dbus.service", "op-dbus-snapshot.timer"}


def test_the_settings_hold_the_profile_retention(host, profile):
    settings = json.loads(host.file("/etc/op-dbus/config.json").content_string)
    assert settings["retention"] == profile["retention"]
    assert settings["snapshot_interval"] == profile["interval"]


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


def test_the_guides_commands_work(host, profile):
    host.run_test("systemctl start op-dbus-snapshot.service")
    # The restore points: the role's apply, and a snapshot only where the state changed since it.
    snapshots = host.run("op-dbus blockchain snapshots")
    assert snapshots.rc == 0 and snapshots.stdout.startswith("ID "), snapshots.stdout
    assert len(snapshots.stdout.splitlines()) >= 2, snapshots.stdout
    numa = host.run("op-dbus cache numa-info")
    assert numa.rc == 0 and numa.stdout.startswith("NUMA Topology")
    assert f"Strategy: {profile['numa_strategy']}" in numa.stdout
    assert "NUMA topology detected: 1 nodes" in host.run("journalctl -u op-dbus --no-pager").stdout
