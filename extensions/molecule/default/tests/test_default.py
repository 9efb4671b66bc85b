# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After converge: the hosts hold the profile, as systemd itself reports it, and the files agree."""

import json


def test_systemd_is_pid_1_and_the_system_is_running(host):
    assert host.check_output("ps -p 1 -o comm=") == "systemd"
    assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_the_profile_holds(host):
    assert host.service("ssh").is_running and host.service("ssh").is_enabled
    assert host.run("systemctl is-active dpkg-db-backup.timer").stdout.strip() == "active"
    assert host.run("systemctl is-enabled debug-shell.service").stdout.strip() == "masked"


def test_current_json_equals_state_json(host):
    desired = json.loads(host.file("/etc/op-dbus/state.json").content_string)
    applied = json.loads(host.file("/var/lib/op-dbus/blockchain/state/current.json").content_string)
    assert desired == applied
    assert "debug-shell.service" in desired["plugins"]["systemd"]["units"]


def test_ledger_files_are_root_only(host):
    ledger = host.file("/var/lib/op-dbus/blockchain")
    assert ledger.user == "root" and ledger.mode == 0o700
    assert host.file("/var/lib/op-dbus/blockchain/ledger.jsonl").mode == 0o600
