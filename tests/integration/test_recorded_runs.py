# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger misses nothing: real opdbus_state runs SIGKILLed at random points, and concurrent conflicting runs.

Both run on node3 through tests/integration/files/recorded_runs.py, which executes the module as
Ansible ships it (the AnsiballZ wrapper Ansible leaves on the host with ANSIBLE_KEEP_REMOTE_FILES).
"""

import json
import os
import subprocess

import pytest
from fleet import ansible_command, ansible_environment

HOST = "node3"
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files", "recorded_runs.py")
KILLS = 100


@pytest.fixture(scope="module")
def wrapper(fleet):
    """Leave opdbus_state's AnsiballZ wrapper on the host (a check-mode run changes nothing)."""
    fleet.ssh(HOST, "rm -rf /root/.ansible/tmp")
    argv = [ansible_command("ansible"), "-i", fleet.inventory_file, HOST, "-m", "opdbus.fleet.opdbus_state", "--check",
            "-a", json.dumps({"state": {"version": 1, "plugins": {"systemd": {"units": {}}}},
                              "ledger_path": "/var/lib/opdbus-recorded-runs/unused"})]
    result = subprocess.run(argv, env=ansible_environment(ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_PIPELINING="False"),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    fleet.ssh(HOST, "cat > /root/recorded_runs.py", input=open(DRIVER).read())
    return "/root/.ansible/tmp/ansible-tmp-*/AnsiballZ_opdbus_state.py"


def drive(fleet, wrapper, mode, count, timeout):
    result = fleet.ssh(HOST, f"python3 /root/recorded_runs.py '{wrapper}' {mode} {count}", timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_run_killed_at_a_random_point_is_reported_and_nothing_goes_unrecorded(fleet, wrapper):
    summary = drive(fleet, wrapper, "kill", KILLS, timeout=600)
    print(f"recorded runs: {summary['runs']} runs, {summary['killed']} SIGKILLed while running, "
          f"{len(summary['interrupted_seen'])} between intent and outcome")
    assert summary["killed"] >= KILLS
    # Whenever the newest intent had its outcome, the host was exactly in the state the ledger recorded.
    assert summary["violations"] == []
    verification = summary["verify"]
    assert verification["valid"], verification["problems"]
    # Every run killed between intent and outcome is listed by seq, and was closed by the run after it.
    assert sorted(run["seq"] for run in verification["interrupted"]) == sorted(summary["interrupted_seen"])
    assert all(run["resolved_by"] is not None for run in verification["interrupted"])
    assert "in_progress" not in verification
    # Some kills must land between intent and outcome, or this test proves nothing about them.
    assert len(summary["interrupted_seen"]) >= 10
    final = summary["final"]
    assert not final.get("failed"), final
    assert summary["live_after_final"] == summary["expected_after_final"]


def test_concurrent_conflicting_applies_take_turns_and_chain_before_to_after(fleet, wrapper):
    summary = drive(fleet, wrapper, "concurrent", 4, timeout=300)
    assert [run["rc"] for run in summary["results"]] == [0, 0, 0, 0], summary["results"]
    assert summary["verify"]["valid"], summary["verify"]["problems"]
    outcomes = [entry for entry in summary["entries"] if entry["action"] == "apply"]
    assert len(outcomes) == 4
    # Runs that found the lock taken waited for it, and said so.
    waited = [run for run in summary["results"] if "waited" in json.dumps(run["result"].get("warnings", []))]
    assert len(waited) >= 2
    # Each unit's recorded `before` is the `after` the previous entry recorded for it.
    last_after = {}
    for entry in outcomes:
        for change in entry["changes"]["units"]:
            if change["unit"] in last_after:
                assert change["before"] == last_after[change["unit"]], (entry["seq"], change)
            last_after[change["unit"]] = change["after"]
    assert {unit: state for unit, state in summary["live"].items() if unit in last_after} == last_after
