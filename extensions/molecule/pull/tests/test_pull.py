# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The installed pull service, run as its timer runs it: the first run converges the laptop profile
from the served repository, the second changes nothing, and the ledger shows the pulled runs."""

import re

import pytest
import yaml

SERVICE = "opdbus-pull.service"
LOCK = "/run/lock/opdbus-pull.lock"


@pytest.fixture(scope="module")
def served(host):
    path = host.ansible.get_variables()["served_sources"]
    with open(path) as handle:
        return yaml.safe_load(handle)


def ledger(host):
    result = host.ansible("opdbus.fleet.opdbus_ledger_info", "limit=1000", check=False, become=True)
    assert result["valid"] is True, result
    return result


def pull_run(host):
    """Start the service as the timer does and return its exit status and its own journal lines."""
    result = host.run(f"systemctl start {SERVICE}")
    invocation = host.check_output(f"systemctl show -p InvocationID --value {SERVICE}")
    journal = host.check_output(f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={invocation}")
    return result.rc, journal


def recap(journal):
    match = re.search(r"localhost\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", journal)
    assert match, journal[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


def test_the_timer_is_randomised_persistent_and_enabled(host):
    timer = host.service("opdbus-pull.timer")
    assert timer.is_running and timer.is_enabled
    loaded = host.check_output("systemctl show -p Persistent -p RandomizedDelayUSec -p TimersCalendar opdbus-pull.timer")
    assert "Persistent=yes" in loaded and "RandomizedDelayUSec=10min" in loaded, loaded
    assert "OnCalendar=*-*-* *:00/30:00" in loaded, loaded


def test_ansible_core_runs_from_the_virtualenv_not_the_system(host):
    version = host.check_output("/opt/opdbus-pull/venv/bin/ansible --version").splitlines()[0]
    assert "core 2.19" in version, version
    assert host.run("/usr/bin/python3 -c 'import ansible'").rc != 0
    assert host.file("/opt/opdbus-pull/collections/ansible_collections/opdbus/fleet/MANIFEST.json").exists


def test_a_run_waits_for_the_one_in_progress(host):
    # The scenario sets opdbus_pull_lock_wait to 5 s: a run that cannot get the lock gives up, and no
    # second ansible-pull starts beside the one holding it.
    host.run_test(f"systemd-run --unit=opdbus-pull-holder flock {LOCK} sleep 60")
    try:
        rc, journal = pull_run(host)
    finally:
        host.run("systemctl stop opdbus-pull-holder.service")
        host.run(f"systemctl reset-failed {SERVICE}")
    assert rc != 0
    assert "PLAY" not in journal, journal


def test_the_first_run_converges_and_the_second_changes_nothing(host, served):
    before = ledger(host)["checkpoint"]["size"]
    rc, journal = pull_run(host)
    assert rc == 0, journal[-3000:]
    first = recap(journal)
    assert first["changed"] > 0 and first["failed"] == 0, first
    after_first = ledger(host)
    assert after_first["checkpoint"]["size"] > before

    pulled = [entry for entry in after_first["entries"] if entry["action"] == "pull_applied"]
    assert [entry["changes"] for entry in pulled] == [{"revision": served["served_revision"], "profile": "laptop"}]
    applied = [entry["action"] for entry in after_first["entries"][before:]]
    assert "apply" in applied and "role_files" in applied, applied

    rc, journal = pull_run(host)
    assert rc == 0, journal[-3000:]
    assert recap(journal)["changed"] == 0, journal[-3000:]
    assert ledger(host)["checkpoint"] == after_first["checkpoint"]


def test_the_pulled_profile_holds(host):
    assert host.service("NetworkManager.service").is_running
    result = host.run("opdbus apply --check")
    assert result.rc == 0 and "nothing to do" in result.stdout, result.stdout + result.stderr


def test_everything_came_from_the_controllers_server(host, served):
    with open(served["served_access_log"]) as handle:
        log = handle.read()
    for path in ("/wheels/ansible_core-", "/collections/opdbus-fleet-"):
        assert re.search(rf'"GET {re.escape(path)}\S* HTTP/1\.[01]" 200', log), path
