# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import fcntl
import json
import os
import re
import stat

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import LedgerError, canonical_json
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import DEFAULT_LEDGER_DIR, Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import (
    EMPTY_ROOT, Frontier, leaf_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion,
)
from ansible_collections.opdbus.fleet.tests.unit.fixtures.ledger.builder import (
    append_entries,
    read_ledger,
    write_file,
)

SHA = "ab" * 32


@pytest.fixture
def ledger(tmp_path):
    return Ledger(str(tmp_path / "blockchain"), host="host1")


def test_default_location():
    assert DEFAULT_LEDGER_DIR == "/var/lib/op-dbus/blockchain"
    assert Ledger().directory == DEFAULT_LEDGER_DIR


def test_canonical_json():
    assert canonical_json({"b": [1, 2.5, None], "a": "é\n", "c": {"z": True, "y": "\u2028"}}) == \
        '{"a":"é\\n","b":[1,2.5,null],"c":{"y":"\u2028","z":true}}'.encode("utf-8")
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        canonical_json({"x": "\ud800"})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_append_returns_the_stored_entry_and_checkpoint(ledger):
    first = ledger.append("apply", ({"unit": "sshd.service", "field": "enabled", "from": False, "to": True},),
                          state_sha256=SHA, actor="alice")
    assert first["seq"] == 0 and first["prev_root"] == EMPTY_ROOT.hex()
    assert first["changes"] == [{"unit": "sshd.service", "field": "enabled", "from": False, "to": True}]
    assert first["host"] == "host1" and first["actor"] == "alice" and first["action"] == "apply"
    assert first["state_sha256"] == SHA and first["recovered"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["time"])
    assert re.fullmatch(r"opdbus:host1:[0-9a-f]{32}", first["checkpoint"]["origin"])
    second = ledger.append("snapshot", {"id": SHA})
    assert second["seq"] == 1 and second["state_sha256"] is None and second["actor"]
    assert second["prev_root"] == first["checkpoint"]["root"]
    assert second["checkpoint"]["origin"] == first["checkpoint"]["origin"]

    lines, head = read_ledger(ledger.directory)
    stored = [json.loads(line) for line in lines]
    assert stored == [{k: v for k, v in e.items() if k not in ("checkpoint", "recovered")} for e in (first, second)]
    assert all(canonical_json(entry) == line for entry, line in zip(stored, lines))
    leaves = [leaf_hash(line) for line in lines]
    assert second["checkpoint"]["root"] == root_from_leaf_hashes(leaves).hex()
    head = json.loads(head)
    assert head == {"version": 1, "origin": first["checkpoint"]["origin"], "size": 2,
                    "length": sum(len(line) + 1 for line in lines), "root": second["checkpoint"]["root"],
                    "frontier": [root_from_leaf_hashes(leaves).hex()]}
    assert ledger.verify() == {"valid": True, "problems": [], "recoverable": [], "interrupted": [], "checkpoint": second["checkpoint"]}
    assert ledger.checkpoint() == second["checkpoint"]


@pytest.mark.parametrize("args, message", [
    (("", []), "action"),
    ((None, []), "action"),
    (("apply", "x"), "changes"),
    (("apply", None), "changes"),
    (("apply", [], "AB" * 32), "state_sha256"),
    (("apply", [], "ab"), "state_sha256"),
    (("apply", [], None, 5), "actor"),
])
def test_append_rejects_bad_arguments(ledger, args, message):
    with pytest.raises(ValueError, match=message):
        ledger.append(*args)
    assert not os.path.exists(ledger.directory)


def test_append_rejects_values_json_cannot_hold(ledger):
    ledger.append("apply", [])
    for changes in ([float("inf")], {"x": "\udc80"}):
        with pytest.raises(ValueError):
            ledger.append("apply", changes)
    with pytest.raises(TypeError):
        ledger.append("apply", [object()])
    assert ledger.verify()["valid"] and ledger.checkpoint()["size"] == 1


def test_permissions(tmp_path):
    old = os.umask(0)
    try:
        ledger = Ledger(str(tmp_path / "var" / "lib" / "op-dbus" / "blockchain"))
        ledger.append("apply", [])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(ledger.directory).st_mode) == 0o700
    names = sorted(os.listdir(ledger.directory))
    assert names == ["head.json", "ledger.jsonl", "lock"]
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(ledger.directory, name)).st_mode) == 0o600, name


def test_creating_the_ledger_makes_an_existing_directory_private(ledger):
    os.makedirs(os.path.join(ledger.directory, "state"))
    os.chmod(ledger.directory, 0o755)
    ledger.append("apply", [])
    assert stat.S_IMODE(os.stat(ledger.directory).st_mode) == 0o700
    # Later appends leave whatever an administrator decided alone.
    os.chmod(ledger.directory, 0o750)
    ledger.append("apply", [])
    assert stat.S_IMODE(os.stat(ledger.directory).st_mode) == 0o750


def test_entries_selection(ledger):
    append_entries(ledger, 10)
    assert [e["seq"] for e in ledger.entries()] == list(range(10))
    assert [e["seq"] for e in ledger.entries(since=7)] == [7, 8, 9]
    assert [e["seq"] for e in ledger.entries(since=-3)] == [7, 8, 9]
    assert [e["seq"] for e in ledger.entries(since=-30)] == list(range(10))
    assert [e["seq"] for e in ledger.entries(since=2, limit=3)] == [2, 3, 4]
    assert [e["seq"] for e in ledger.entries(limit=2)] == [0, 1]
    assert ledger.entries(limit=0) == [] and ledger.entries(since=10) == []


def test_proofs_verify(ledger):
    results = append_entries(ledger, 13)
    checkpoint = ledger.checkpoint()
    root = bytes.fromhex(checkpoint["root"])
    for seq in range(13):
        proof = ledger.inclusion_proof(seq)
        assert proof["size"] == 13 and proof["root"] == checkpoint["root"]
        assert verify_inclusion(bytes.fromhex(proof["leaf_hash"]), seq, 13, [bytes.fromhex(p) for p in proof["proof"]],
                                root)
    for old in range(14):
        proof = ledger.consistency_proof(old)
        old_root = EMPTY_ROOT.hex() if old == 0 else results[old - 1]["checkpoint"]["root"]
        assert proof["old_root"] == old_root and proof["root"] == checkpoint["root"]
        assert verify_consistency(old, 13, bytes.fromhex(old_root), root, [bytes.fromhex(p) for p in proof["proof"]])
    with pytest.raises(ValueError):
        ledger.inclusion_proof(13)
    with pytest.raises(ValueError):
        ledger.consistency_proof(14)


def test_every_acknowledged_checkpoint_is_a_valid_anchor(ledger):
    results = append_entries(ledger, 20)
    for result in results:
        assert ledger.verify(anchor=result["checkpoint"])["valid"]


def test_a_host_without_a_ledger(tmp_path):
    ledger = Ledger(str(tmp_path / "never"))
    empty = {"origin": None, "size": 0, "root": EMPTY_ROOT.hex()}
    assert ledger.verify() == {"valid": True, "problems": [], "recoverable": [], "interrupted": [], "checkpoint": empty}
    assert ledger.checkpoint() == empty and ledger.entries() == []
    assert ledger.verify(anchor=empty)["valid"]
    assert not os.path.exists(ledger.directory)


def test_path_that_is_not_a_directory(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    for call in (lambda l: l.verify(), lambda l: l.append("apply", []), lambda l: l.entries()):
        with pytest.raises(LedgerError, match="not a directory"):
            call(Ledger(str(path)))


# -- Crash residue -------------------------------------------------------------------------------

def kinds(items):
    return [(item["kind"], item["seq"]) for item in items]


def test_torn_tail_is_reported_then_removed(ledger):
    append_entries(ledger, 3)
    before = ledger.checkpoint()
    with open(os.path.join(ledger.directory, "ledger.jsonl"), "ab") as handle:
        handle.write(b'{"action":"apply","actor":"ro')
    result = ledger.verify()
    assert result["valid"] and kinds(result["recoverable"]) == [("torn_tail", 3)]
    assert result["checkpoint"] == before == ledger.checkpoint()
    assert len(ledger.entries()) == 3
    appended = ledger.append("apply", [])
    assert appended["seq"] == 3 and kinds(appended["recovered"]) == [("torn_tail", 3)]
    assert ledger.verify() == {"valid": True, "problems": [], "recoverable": [], "interrupted": [], "checkpoint": appended["checkpoint"]}


def test_complete_but_unparseable_last_line_counts_as_torn(ledger):
    append_entries(ledger, 2)
    with open(os.path.join(ledger.directory, "ledger.jsonl"), "ab") as handle:
        handle.write(b'{"action":\x00\x00\x00\n')
    result = ledger.verify()
    assert result["valid"] and kinds(result["recoverable"]) == [("torn_tail", 2)]
    assert kinds(ledger.append("apply", [])["recovered"]) == [("torn_tail", 2)]
    assert ledger.verify()["recoverable"] == []


def test_head_lag_is_reported_then_adopted(ledger):
    append_entries(ledger, 4)
    lines, head = read_ledger(ledger.directory)
    ledger.append("apply", [{"unit": "x.service"}])
    lagging = ledger.verify()["checkpoint"]
    write_file(ledger.directory, "head.json", head)
    result = ledger.verify()
    assert result["valid"] and kinds(result["recoverable"]) == [("head_lag", 4)]
    assert result["checkpoint"] == lagging == ledger.checkpoint()
    assert [e["seq"] for e in ledger.entries()] == [0, 1, 2, 3, 4]
    appended = ledger.append("apply", [])
    assert appended["seq"] == 5 and kinds(appended["recovered"]) == [("head_lag", 4)]
    assert ledger.verify(anchor=lagging)["valid"]


def head_covering(ledger, lines):
    """head.json of ``ledger`` rewritten to cover exactly ``lines``."""
    with open(os.path.join(ledger.directory, "head.json"), "rb") as handle:
        head = json.loads(handle.read())
    frontier = Frontier()
    frontier.extend(leaf_hash(line) for line in lines)
    head.update(size=len(lines), length=sum(len(line) + 1 for line in lines), root=frontier.root().hex(),
                frontier=frontier.to_hex())
    return canonical_json(head) + b"\n"


def test_several_lagging_entries_and_a_torn_tail_are_recovered(ledger):
    # A power failure can lose head.json's last renames (appends do not sync the directory)
    # while the entries themselves, synced before each rename, survive.
    append_entries(ledger, 5)
    lines, _head = read_ledger(ledger.directory)
    checkpoint = ledger.checkpoint()
    write_file(ledger.directory, "head.json", head_covering(ledger, lines[:3]))
    with open(os.path.join(ledger.directory, "ledger.jsonl"), "ab") as handle:
        handle.write(b"\x00\x00\x00")
    result = ledger.verify(anchor=checkpoint)
    assert result["valid"] and result["checkpoint"] == checkpoint == ledger.checkpoint()
    assert kinds(result["recoverable"]) == [("head_lag", 3), ("torn_tail", 5)]
    assert "entries 3 to 4 are" in result["recoverable"][0]["detail"]
    appended = ledger.append("apply", [])
    assert appended["seq"] == 5 and kinds(appended["recovered"]) == [("head_lag", 3), ("torn_tail", 5)]
    assert ledger.verify(anchor=checkpoint)["recoverable"] == []


@pytest.mark.parametrize("tail", [
    lambda lines: lines[4] + b'\n{"seq":5}\n',
    lambda lines: lines[4] + b"\n" + lines[4] + b"\n",
    lambda lines: b'{"seq":4}\n',
    lambda lines: lines[3] + b"\n",
])
def test_residue_no_crash_explains_blocks_writers(ledger, tail):
    append_entries(ledger, 5)
    lines, _head = read_ledger(ledger.directory)
    write_file(ledger.directory, "head.json", head_covering(ledger, lines[:4]))
    write_file(ledger.directory, "ledger.jsonl", b"".join(line + b"\n" for line in lines[:4]) + tail(lines))
    result = ledger.verify()
    assert not result["valid"] and "head_size_mismatch" in [p["kind"] for p in result["problems"]]
    with pytest.raises(LedgerError, match="refusing to append"):
        ledger.append("apply", [])


@pytest.mark.parametrize("damage, message", [
    (lambda d: os.unlink(os.path.join(d, "head.json")), "head.json is missing"),
    (lambda d: write_file(d, "head.json", b"{}"), "exactly the fields"),
    (lambda d: os.unlink(os.path.join(d, "ledger.jsonl")), "ledger.jsonl is missing"),
    (lambda d: os.truncate(os.path.join(d, "ledger.jsonl"), 10), "entries were removed"),
    (lambda d: os.truncate(os.path.join(d, "ledger.jsonl"), os.path.getsize(os.path.join(d, "ledger.jsonl")) - 1),
     "entries were removed"),
])
def test_damage_no_crash_explains_blocks_writers(ledger, damage, message):
    append_entries(ledger, 3)
    damage(ledger.directory)
    with pytest.raises(LedgerError, match=message):
        ledger.append("apply", [])
    assert not ledger.verify()["valid"]


def test_head_that_does_not_end_on_a_line_boundary_blocks_writers(ledger):
    append_entries(ledger, 3)
    with open(os.path.join(ledger.directory, "ledger.jsonl"), "rb") as handle:
        data = handle.read()
    write_file(ledger.directory, "ledger.jsonl", b" " + data)
    with pytest.raises(LedgerError, match="line boundary"):
        ledger.append("apply", [])
    assert not ledger.verify()["valid"]


def test_interrupted_initialisation_is_completed(ledger):
    os.makedirs(ledger.directory)
    write_file(ledger.directory, "ledger.jsonl", b"")
    assert ledger.verify()["valid"]
    assert ledger.append("apply", [])["seq"] == 0


# -- Operational errors --------------------------------------------------------------------------

def test_lock_timeout(ledger):
    ledger.append("apply", [])
    fd = os.open(os.path.join(ledger.directory, "lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = Ledger(ledger.directory, lock_timeout=0.2)
        with pytest.raises(LedgerError, match="timed out after 0.2s waiting for the ledger lock"):
            busy.append("apply", [])
        with pytest.raises(LedgerError, match="timed out"):
            busy.verify()
    finally:
        os.close(fd)
    assert ledger.verify()["checkpoint"]["size"] == 1


def test_readers_share_the_lock(ledger):
    ledger.append("apply", [])
    with ledger.reading():
        assert Ledger(ledger.directory, lock_timeout=0.2).verify()["valid"]
        with pytest.raises(LedgerError, match="timed out"):
            Ledger(ledger.directory, lock_timeout=0.2).append("apply", [])


def test_permission_denied_is_explained(ledger):
    ledger.append("apply", [])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            else:
                os.chmod(ledger.directory, 0)
            for call in (ledger.verify, lambda: ledger.append("apply", []), ledger.checkpoint):
                try:
                    call()
                except LedgerError as exc:
                    if "run as root (become: true)" not in str(exc):
                        raise
                else:
                    raise AssertionError("no LedgerError")
            code = 0
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    os.chmod(ledger.directory, 0o700)
    assert status == 0


def test_the_anchor_proof_verifies_independently(tmp_path):
    ledger = Ledger(str(tmp_path / "bc"))
    for index in range(5):
        ledger.append("apply", [index])
    anchor = ledger.checkpoint()
    for index in range(6):
        ledger.append("apply", [index])
    result = ledger.verify(anchor=anchor)
    proof = result["anchor_proof"]
    assert result["valid"] and proof["old_size"] == 5 and proof["size"] == 11
    assert verify_consistency(5, 11, bytes.fromhex(anchor["root"]), bytes.fromhex(result["checkpoint"]["root"]),
                              [bytes.fromhex(node) for node in proof["proof"]])
