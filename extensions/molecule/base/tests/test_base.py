# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After converge: the base role alone holds the user's units, and its own installs are in the ledger."""

import json


def test_the_users_units_hold_under_the_distributions_names(host):
    assert host.service("ssh").is_running and host.service("ssh").is_enabled  # declared as sshd.service
    assert not host.service("cups").is_running


def test_the_roles_own_files_are_recorded_in_the_ledger(host):
    entries = json.loads(host.check_output("opdbus --json ledger list"))
    recorded = [entry for entry in entries if entry["action"] == "role_files"]
    assert len(recorded) == 1, recorded  # the converge; the idempotence run changed nothing
    files = recorded[0]["changes"]["files"]
    for path in ("/usr/lib/opdbus/opdbus.pyz", "/usr/local/bin/opdbus", "/usr/local/bin/op-dbus",
                 "/usr/local/bin/opdbus-health.sh", "/etc/op-dbus/config.json",
                 "/etc/systemd/system/op-dbus.service", "/etc/systemd/system/op-dbus-snapshot.timer"):
        assert path in files, files
    assert recorded[0]["changes"]["host_command"].startswith("opdbus-")


def test_an_unchanged_state_adds_nothing_to_the_ledger(host):
    host.run_test("systemctl start op-dbus-snapshot.service")
    size = json.loads(host.check_output("opdbus --json ledger verify"))["checkpoint"]["size"]
    host.run_test("systemctl start op-dbus-snapshot.service")
    host.run_test("systemctl start op-dbus-snapshot.service")
    assert json.loads(host.check_output("opdbus --json ledger verify"))["checkpoint"]["size"] == size
