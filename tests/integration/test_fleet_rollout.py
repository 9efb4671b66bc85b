# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`ansible-playbook opdbus.fleet.site` on three hosts, one per profile, with the checkpoints the controller holds.

The hosts' ledgers are then rolled back, rewritten and lied about, and each time only the host
concerned fails, named by the controller's own proof check. The fleet is this module's own, since
the rollout changes every unit the profiles declare.
"""

import json
import os
import subprocess
import tempfile

import pytest
from fleet import ansible_command, ansible_environment, booted_fleet

CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files", "callback")
LEDGER = "/var/lib/op-dbus/blockchain"
COPY = "/root/ledger-copy"
GROUPS = {"node1": "laptops", "node2": "workstations", "node3": "dgx"}
# Stands in for a compromised host: runs the real module, then rewrites its answer about the ledger
# to "valid, nothing wrong" with a proof made up to look right.
FORGING_INTERPRETER = r"""#!/usr/bin/python3
import json, subprocess, sys
run = subprocess.run(["/usr/bin/python3", *sys.argv[1:]], stdin=sys.stdin.buffer, capture_output=True)
try:
    reply = json.loads(run.stdout)
except ValueError:
    sys.stdout.buffer.write(run.stdout)
    sys.exit(run.returncode)
if "checkpoint" in reply:
    anchor = reply.get("invocation", {}).get("module_args", {}).get("anchor") or {}
    reply.pop("failed", None)
    reply.pop("msg", None)
    reply.update(valid=True, problems=[], anchor_proof={
        "old_size": anchor.get("size"), "old_root": anchor.get("root"), "size": reply["checkpoint"]["size"],
        "root": reply["checkpoint"]["root"], "proof": ["ab" * 32]})
print(json.dumps(reply))
"""


@pytest.fixture(scope="module")
def fleet():
    with booted_fleet(os.environ.get("OPDBUS_ROLLOUT_FLEET_NAME", "itestfl"), len(GROUPS)) as rollout_fleet:
        yield rollout_fleet


@pytest.fixture(scope="module")
def inventory(fleet, tmp_path_factory):
    """The fleet's inventory plus the profile groups, as a second inventory source."""
    path = tmp_path_factory.mktemp("inventory") / "groups.yml"
    path.write_text(json.dumps({"all": {"children": {group: {"hosts": {host: None}}
                                                     for host, group in GROUPS.items()}}}))
    return [fleet.inventory_file, str(path)]


@pytest.fixture(scope="module")
def anchor_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("anchors") / "checkpoints"


def rollout(inventory, *args):
    """Run opdbus.fleet.site; return (exit status, {host: {task name: result}}, {host: recap})."""
    argv = [ansible_command("ansible-playbook"), *(f"-i{source}" for source in inventory), "opdbus.fleet.site", *args]
    with tempfile.NamedTemporaryFile(suffix=".json") as report_file:
        run = subprocess.run(argv, env=ansible_environment(ANSIBLE_CALLBACK_PLUGINS=CALLBACKS,
                                                           ANSIBLE_CALLBACKS_ENABLED="rollout_report",
                                                           ROLLOUT_REPORT=report_file.name),
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900, check=False)
        try:
            report = json.load(report_file)
        except ValueError:
            pytest.fail(f"{' '.join(argv)}: no report ({run.returncode})\n{run.stdout}\n{run.stderr}")
    return run.returncode, report["results"], report["stats"]


CHECKPOINT_TASK = "Verify the consistency proof on the controller and store the checkpoint"


def stored(anchor_dir, host):
    path = anchor_dir / f"{host}.json"
    return json.loads(path.read_text()) if path.exists() else None


def host_checkpoint(fleet, host):
    return fleet.run_module(host, "opdbus.fleet.opdbus_ledger_info", {"limit": 0})["checkpoint"]


def record(fleet, host, note):
    result = fleet.run_module(host, "opdbus.fleet.opdbus_ledger_record", {"action": "test_note", "changes": {"note": note}})
    assert result.get("changed"), result


def test_a_rollout_converges_every_profile_and_stores_each_hosts_checkpoint(fleet, inventory, anchor_dir):
    rc, results, stats = rollout(inventory, "-e", f"opdbus_anchor_dir={anchor_dir}")
    assert rc == 0, stats
    for host in GROUPS:
        assert stats[host]["failures"] == 0 and stats[host]["changed"] > 0, stats[host]
        assert results[host][CHECKPOINT_TASK]["stored_in"] is None  # first contact
        assert stored(anchor_dir, host) == host_checkpoint(fleet, host)
        assert stored(anchor_dir, host)["size"] > 0
        assert oct((anchor_dir / f"{host}.json").stat().st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(anchor_dir)) == [f"{host}.json" for host in sorted(GROUPS)]

    rc, results, stats = rollout(inventory, "-e", f"opdbus_anchor_dir={anchor_dir}")
    assert rc == 0
    for host in GROUPS:
        assert stats[host]["changed"] == 0, (host, stats[host])
        assert results[host][CHECKPOINT_TASK]["stored_in"] == str(anchor_dir / f"{host}.json")


def test_check_diff_predicts_a_new_checkpoint_and_stores_nothing(fleet, inventory, anchor_dir):
    before = stored(anchor_dir, "node1")
    record(fleet, "node1", "between rollouts")
    rc, results, stats = rollout(inventory, "-e", f"opdbus_anchor_dir={anchor_dir}", "--check", "--diff")
    assert rc == 0, stats
    predicted = results["node1"][CHECKPOINT_TASK]
    assert predicted["changed"] and predicted["checkpoint"]["size"] == before["size"] + 1
    assert "ansible_facts" not in predicted
    assert '"size": %d' % (before["size"] + 1) in predicted["diff"]["after"]
    assert stored(anchor_dir, "node1") == before
    assert all(stats[host]["changed"] == 0 for host in ("node2", "node3"))
    rc = rollout(inventory, "-e", f"opdbus_anchor_dir={anchor_dir}")[0]
    assert rc == 0 and stored(anchor_dir, "node1")["size"] == before["size"] + 1


def test_a_rolled_back_and_a_rewritten_ledger_fail_their_hosts_only(fleet, inventory, anchor_dir):
    for host in ("node2", "node3"):
        fleet.ssh(host, f"rm -rf {COPY} && cp -a {LEDGER} {COPY}")
        record(fleet, host, "seen by the controller")
    rc = rollout(inventory, "-e", f"opdbus_anchor_dir={anchor_dir}")[0]
    assert rc == 0
    held = {host: stored(anchor_dir, host) for host in GROUPS}
    # node2: back to the earlier copy, a consistent ledger one entry short.
    fleet.ssh("node2", f"rm -rf {LEDGER} && cp -a {COPY} {LEDGER}")
    # node3: the same copy plus a different entry, a consistent ledger of the size the controller saw.
    fleet.ssh("node3", f"rm -rf {LEDGER} && cp -a {COPY} {LEDGER}")
    record(fleet, "node3", "a different history")
    assert host_checkpoint(fleet, "node3")["size"] == held["node3"]["size"]

    rc, results, stats = rollout(inventory, "-e", f"opdbus_anchor_dir={anchor_dir}")
    assert rc != 0
    assert stats["node1"]["failures"] == 0 and stats["node1"]["ok"] > 0
    truncated = results["node2"][CHECKPOINT_TASK]
    assert truncated["failed"] and truncated["problem"] == "anchor_truncated"
    assert "rolled back" in truncated["msg"]
    rewritten = results["node3"][CHECKPOINT_TASK]
    assert rewritten["failed"] and rewritten["problem"] == "anchor_inconsistent"
    for host, result in (("node2", truncated), ("node3", rewritten)):
        assert held[host]["root"] in result["msg"] and result["checkpoint"]["root"] in result["msg"]
        assert stats[host]["failures"] == 1
        assert stored(anchor_dir, host) == held[host], f"{host}'s stored checkpoint must be kept"


def test_a_host_that_answers_valid_is_still_caught_by_the_controllers_proof_check(
        fleet, inventory, anchor_dir, tmp_path):
    held = {host: stored(anchor_dir, host) for host in ("node2", "node3")}
    liars = tmp_path / "liars.yml"
    forging = {"ansible_python_interpreter": "/usr/local/bin/python3-forging"}
    liars.write_text(json.dumps({"all": {"hosts": {host: forging for host in held}}}))
    for host in held:
        fleet.ssh(host, "install -m 0755 /dev/stdin /usr/local/bin/python3-forging", input=FORGING_INTERPRETER)
        # The forger is convincing: asked directly, the host says its ledger is fine.
        lie = subprocess.run([ansible_command("ansible"), *(f"-i{source}" for source in inventory), f"-i{liars}", host,
                              "-m", "opdbus.fleet.opdbus_ledger_info", "-a", json.dumps({"anchor": held[host], "limit": 0})],
                             env=ansible_environment(), capture_output=True, text=True, check=False)
        assert lie.returncode == 0 and "valid: true" in lie.stdout, lie.stdout

    rc, results, stats = rollout(inventory + [str(liars)], "-e", f"opdbus_anchor_dir={anchor_dir}", "--tags", "checkpoint")
    assert rc != 0 and stats["node1"]["failures"] == 0
    assert results["node2"][CHECKPOINT_TASK]["problem"] == "anchor_truncated"
    assert results["node3"][CHECKPOINT_TASK]["problem"] == "anchor_inconsistent"
    assert {host: stored(anchor_dir, host) for host in held} == held
