# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""opdbus_ledger_info run as a separate process, as Ansible runs it on a target."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import (
    EMPTY_ROOT, verify_consistency,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.blobs import BlobStore
from ansible_collections.opdbus.fleet.tests.unit.fixtures.ledger.builder import (
    append_entries,
    read_ledger,
    write_ledger,
    write_lines,
)

MODULE = "ansible_collections.opdbus.fleet.plugins.modules.opdbus_ledger_info"
# .../ansible_collections/opdbus/fleet/plugins/modules/opdbus_ledger_info.py -> the directory holding ansible_collections
COLLECTIONS_ROOT = os.path.abspath(os.path.join(importlib.util.find_spec(MODULE).origin, *[os.pardir] * 6))


def run(tmp_path, args, extra_path=None):
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    path = [p for p in (extra_path, COLLECTIONS_ROOT, os.environ.get("PYTHONPATH")) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.run([sys.executable, "-m", MODULE, str(args_file)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=120, check=False)
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    assert proc.returncode == (1 if result.get("failed") else 0), proc.stderr
    return result


@pytest.fixture
def ledger_dir(tmp_path):
    directory = str(tmp_path / "blockchain")
    append_entries(Ledger(directory, host="module-host"), 12)
    return directory


def test_valid_ledger(tmp_path, ledger_dir):
    result = run(tmp_path, {"path": ledger_dir})
    assert not result.get("failed") and result["changed"] is False
    assert result["valid"] is True and result["problems"] == [] and result["recoverable"] == []
    # The builder's entries record changes as lists, which no restore point does.
    assert result["restore_points"] == [] and result["pruned"] == 0 and result["anchor_checked"] is False
    assert result["interrupted"] == [] and result["in_progress"] is None
    assert [e["seq"] for e in result["entries"]] == list(range(12))
    assert result["checkpoint"] == Ledger(ledger_dir).checkpoint()
    assert "query_result" not in result


def test_selection_and_check_mode(tmp_path, ledger_dir):
    result = run(tmp_path, {"path": ledger_dir, "since": -3, "_ansible_check_mode": True})
    assert [e["seq"] for e in result["entries"]] == [9, 10, 11]
    result = run(tmp_path, {"path": ledger_dir, "since": 2, "limit": 2})
    assert [e["seq"] for e in result["entries"]] == [2, 3]
    assert run(tmp_path, {"path": ledger_dir, "limit": 0})["entries"] == []
    result = run(tmp_path, {"path": ledger_dir, "limit": -1})
    assert result["failed"] and "limit" in result["msg"]


def tamper(ledger_dir, seq):
    lines, _head = read_ledger(ledger_dir)
    entry = json.loads(lines[seq])
    entry["actor"] = "mallory"
    lines[seq] = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")
    write_lines(ledger_dir, lines)


def test_tampered_ledger_fails_the_task(tmp_path, ledger_dir):
    tamper(ledger_dir, 4)
    result = run(tmp_path, {"path": ledger_dir})
    assert result["failed"] and result["valid"] is False
    assert "prev_root_mismatch at seq 5" in result["msg"]
    assert result["problems"][0]["kind"] == "prev_root_mismatch" and result["problems"][0]["seq"] == 5
    assert result["checkpoint"]["size"] == 12


def test_tampered_ledger_reported_when_asked_not_to_fail(tmp_path, ledger_dir):
    tamper(ledger_dir, 11)
    result = run(tmp_path, {"path": ledger_dir, "fail_on_invalid": False, "limit": 0})
    assert not result.get("failed") and result["valid"] is False
    # "mallory" is longer than the actor it replaced, so head.json's byte count is off too.
    found = [(p["kind"], p["seq"]) for p in result["problems"]]
    assert found == [("head_length_mismatch", None), ("head_root_mismatch", None)]


def test_query(tmp_path, ledger_dir):
    result = run(tmp_path, {"path": ledger_dir, "since": -2, "query": "entries[].seq"})
    assert result["query_result"] == [10, 11]
    result = run(tmp_path, {"path": ledger_dir, "limit": 0, "query": "{ok: valid, n: checkpoint.size}"})
    assert result["query_result"] == {"ok": True, "n": 12}
    result = run(tmp_path, {"path": ledger_dir, "query": "entries[?"})
    assert result["failed"] and "not a valid JMESPath expression" in result["msg"]


def test_query_without_jmespath(tmp_path, ledger_dir):
    blocker = tmp_path / "no_jmespath"
    blocker.mkdir()
    (blocker / "jmespath.py").write_text("raise ImportError('jmespath is not installed here')\n")
    result = run(tmp_path, {"path": ledger_dir, "query": "valid"}, extra_path=str(blocker))
    assert result["failed"] and "jmespath" in result["msg"]
    # Without a query the module does not need it.
    assert run(tmp_path, {"path": ledger_dir, "limit": 0}, extra_path=str(blocker))["valid"]


def test_anchor(tmp_path, ledger_dir):
    checkpoint = Ledger(ledger_dir).checkpoint()
    result = run(tmp_path, {"path": ledger_dir, "limit": 0, "anchor": checkpoint})
    assert result["valid"] and result["anchor_checked"] is True
    assert result["anchor_proof"] == {"old_size": 12, "old_root": checkpoint["root"], "size": 12,
                                      "root": checkpoint["root"], "proof": []}
    for dummy in range(5):
        Ledger(ledger_dir).append("apply", [])
    result = run(tmp_path, {"path": ledger_dir, "limit": 0, "anchor": checkpoint})
    assert result["valid"]
    # The controller can check the proof itself, trusting nothing the host says.
    proof = result["anchor_proof"]
    assert proof["root"] == result["checkpoint"]["root"] and proof["size"] == 17
    assert verify_consistency(checkpoint["size"], proof["size"], bytes.fromhex(checkpoint["root"]),
                              bytes.fromhex(proof["root"]), [bytes.fromhex(p) for p in proof["proof"]])

    later = Ledger(ledger_dir).checkpoint()
    lines, _head = read_ledger(ledger_dir)
    truncated = str(tmp_path / "truncated")
    write_ledger(truncated, lines[:10], origin=later["origin"])
    result = run(tmp_path, {"path": truncated, "limit": 0, "anchor": later})
    assert result["failed"] and "anchor_truncated at seq 10" in result["msg"]
    assert "anchor_proof" not in result and "entries" not in result

    wrong = dict(checkpoint, root="00" * 32)
    result = run(tmp_path, {"path": ledger_dir, "limit": 0, "anchor": wrong})
    assert result["failed"] and result["problems"][0]["kind"] == "anchor_inconsistent"
    assert "against the anchor" in result["msg"]
    proof = result["anchor_proof"]
    assert not verify_consistency(12, proof["size"], bytes(32), bytes.fromhex(proof["root"]),
                                  [bytes.fromhex(p) for p in proof["proof"]])

    result = run(tmp_path, {"path": ledger_dir, "limit": 0, "anchor": {"size": 1}})
    assert result["failed"] and "root" in result["msg"]


def test_host_without_a_ledger(tmp_path):
    result = run(tmp_path, {"path": str(tmp_path / "never-written")})
    assert not result.get("failed") and result["valid"] is True and result["entries"] == []
    assert result["checkpoint"] == {"origin": None, "size": 0, "root": EMPTY_ROOT.hex()}
    # That checkpoint works as an anchor once the host starts recording.
    anchor = result["checkpoint"]
    Ledger(str(tmp_path / "never-written")).append("apply", [])
    assert run(tmp_path, {"path": str(tmp_path / "never-written"), "anchor": anchor})["valid"]


def test_operational_error_is_a_clean_failure(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = run(tmp_path, {"path": str(not_a_dir)})
    assert result["failed"] and "not a directory" in result["msg"]
    assert "exception" not in result


def restore_point_ledger(directory):
    """Ledger entries as the engine and opdbus_snapshot write them, with their blobs."""
    ledger = Ledger(directory, host="module-host")
    store = BlobStore(directory)
    states = [store.put({"version": 1, "plugins": {"systemd": {"units": {"a.service": {"masked": masked}}}}})
              for masked in (False, True)]
    ledger.append("intent", {"for": "apply", "planned": [{"unit": "a.service", "action": "mask"}]})
    ledger.append("apply", {"units": [], "files": [], "intent": 0}, state_sha256=states[1])
    ledger.append("snapshot", {"units": 1, "label": "first", "btrfs": []}, state_sha256=states[1])
    ledger.append("snapshot", {"units": 1, "label": None, "btrfs": []}, state_sha256=states[0])
    ledger.append("delete_snapshot", {"removed": [3], "blobs": [states[0]], "btrfs": []})
    ledger.append("rollback", {"units": [], "files": [], "restored": {"id": 2}}, state_sha256=states[1])
    ledger.append("intent", {"for": "apply", "planned": [{"unit": "a.service", "action": "unmask"}]})
    store.delete(states[0])
    return store, states


def test_restore_points_interrupted_runs_and_pruned_ones(tmp_path):
    directory = str(tmp_path / "blockchain")
    store, states = restore_point_ledger(directory)
    result = run(tmp_path, {"path": directory, "limit": 0})
    assert result["valid"] and result["problems"] == []
    assert [(point["id"], point["kind"], point["digest"]) for point in result["restore_points"]] == [
        (1, "apply", states[1]), (2, "snapshot", states[1]), (5, "rollback", states[1])]
    assert result["restore_points"][1]["label"] == "first" and result["restore_points"][1]["units"] == 1
    assert result["restore_points"][0]["size"] == store.size(states[1]) > 0
    assert result["pruned"] == 1
    assert [(run_["seq"], run_["action"], run_["resolved_by"]) for run_ in result["interrupted"]] == [(6, "apply", None)]
    assert result["interrupted"][0]["planned"] == [{"unit": "a.service", "action": "unmask"}]
    result = run(tmp_path, {"path": directory, "limit": 0, "query": "restore_points[?kind=='apply'].id"})
    assert result["query_result"] == [1]


def test_a_damaged_blob_fails_the_task_naming_the_restore_points(tmp_path):
    directory = str(tmp_path / "blockchain")
    store, states = restore_point_ledger(directory)
    with open(store.path(states[1]), "r+b") as handle:
        handle.seek(8)
        handle.write(b"\xff\xff\xff\xff")
    result = run(tmp_path, {"path": directory, "limit": 0})
    assert result["failed"] and result["valid"] is False
    assert "blob_corrupt at seq 1" in result["msg"]
    assert "restore point(s) 1 (apply), 2 (snapshot), 5 (rollback) cannot be restored" in result["msg"]
    store.delete(states[1])
    result = run(tmp_path, {"path": directory, "limit": 0, "fail_on_invalid": False})
    assert not result.get("failed") and result["valid"] is False
    assert [(problem["seq"], problem["kind"]) for problem in result["problems"]] == [(1, "blob_missing")]
    # The ledger itself is intact: only its restore points are damaged.
    assert Ledger(directory).verify()["valid"]
