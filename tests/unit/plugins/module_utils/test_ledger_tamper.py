# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Every way of tampering with a ledger's files is detected, as the right kind at the right seq."""

from __future__ import annotations

import json
import os
import random
import re
from datetime import datetime

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger import verify as ledger_verify
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import canonical_json
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import (
    EMPTY_ROOT, Frontier, leaf_hash, root_from_leaf_hashes,
)
from ansible_collections.opdbus.fleet.tests.unit.fixtures.ledger.builder import (
    append_entries,
    entry_lines,
    read_ledger,
    write_file,
    write_ledger,
    write_lines,
)

FIELDS = {"action", "actor", "changes", "host", "prev_root", "seq", "state_sha256", "time"}
LINE_KINDS = {"bad_json", "not_canonical", "bad_entry", "seq_gap", "seq_order", "prev_root_mismatch"}
SMALL_SIZES = [1, 2, 3, 7, 8, 9]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Ledgers written by the real writer, by size: (lines, head.json bytes, checkpoint)."""
    cache = {}

    def get(size):
        if size not in cache:
            directory = str(tmp_path_factory.mktemp("base") / "bc")
            ledger = Ledger(directory, host="tamper-host")
            if size <= 31:
                append_entries(ledger, size, seed=size)
            else:
                write_ledger(directory, entry_lines(size, seed=size)[0])
            lines, head = read_ledger(directory)
            assert len(lines) == size
            cache[size] = (lines, head, ledger.checkpoint())
        return cache[size]

    return get


class Scratch:
    """A ledger directory whose files each case overwrites."""

    def __init__(self, directory, head):
        os.makedirs(directory)
        self.directory = directory
        self.head = head
        write_file(directory, "head.json", head)
        self.ledger = Ledger(directory)

    def verify(self, lines, head=None, anchor=None):
        write_lines(self.directory, lines)
        write_file(self.directory, "head.json", head if head is not None else self.head)
        return self.ledger.verify(anchor=anchor)


@pytest.fixture
def scratch(tmp_path, base):
    def make(size):
        lines, head, checkpoint = base(size)
        return Scratch(str(tmp_path / ("scratch%d" % size)), head), list(lines), checkpoint
    return make


def first(result):
    assert not result["valid"] and result["problems"], result
    return result["problems"][0]["kind"], result["problems"][0]["seq"]


def still_a_valid_entry(line, position, prev_root):
    """An independent, deliberately plain statement of what a good entry line is."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except ValueError:
        return False
    if not isinstance(obj, dict) or set(obj) != FIELDS:
        return False
    if json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") != line:
        return False
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq != position or obj["prev_root"] != prev_root:
        return False
    if not (isinstance(obj["time"], str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                                          r"\.[0-9]{6}Z", obj["time"])):
        return False
    try:
        datetime.strptime(obj["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    if not all(isinstance(obj[f], str) and obj[f] for f in ("host", "action")) or not isinstance(obj["actor"], str):
        return False
    if not isinstance(obj["changes"], (list, dict)):
        return False
    sha = obj["state_sha256"]
    return sha is None or isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None


def check_byte_edit(scratch, lines, k, offset, value):
    """Replace one byte of entry k and assert the verifier names the right kind and seq."""
    original = lines[k]
    mutated = original[:offset] + bytes([value]) + original[offset + 1:]
    assert mutated != original
    result = scratch.verify(lines[:k] + [mutated] + lines[k + 1:])
    kind, seq = first(result)
    where = "entry %d offset %d byte %r -> %r" % (k, offset, original[offset:offset + 1], bytes([value]))
    prev_root = json.loads(original)["prev_root"]
    if b"\n" not in mutated and still_a_valid_entry(mutated, k, prev_root):
        # The edit left a well-formed entry: only the next entry's prev_root, or for the last
        # entry head.json's root, can notice.
        want = ("prev_root_mismatch", k + 1) if k + 1 < len(lines) else ("head_root_mismatch", None)
        assert (kind, seq) == want, where
    else:
        assert seq == k and kind in LINE_KINDS, (where, result["problems"])
        if b"\n" not in mutated:
            try:
                json.loads(mutated.decode("utf-8"))
            except ValueError:
                assert kind == "bad_json", where
    assert len(result["problems"]) <= 5, (where, result["problems"])
    return kind


@pytest.mark.parametrize("size", SMALL_SIZES)
def test_every_byte_of_every_entry_edited(scratch, size):
    area, lines, _checkpoint = scratch(size)
    kinds = set()
    for k in range(size):
        for offset in range(len(lines[k])):
            kinds.add(check_byte_edit(area, lines, k, offset, lines[k][offset] ^ 0x01))
    assert {"bad_json", "prev_root_mismatch"} <= kinds


def test_byte_edits_in_a_31_entry_ledger(scratch):
    area, lines, _checkpoint = scratch(31)
    rng = random.Random(31)
    for k in range(31):
        offsets = range(len(lines[k])) if k in (0, 15, 30) else rng.sample(range(len(lines[k])), 25)
        for offset in offsets:
            check_byte_edit(area, lines, k, offset, lines[k][offset] ^ rng.choice([0x01, 0x02, 0x20, 0x80]))


def test_every_replacement_byte_at_structural_offsets(scratch):
    area, lines, _checkpoint = scratch(3)
    line = lines[1]
    text = line.decode("utf-8")
    offsets = {0, 2, len(line) - 1, text.index('"'), text.index(":"), text.index(","), text.index('"seq":') + 6,
               text.index('"prev_root":') + 13, text.index('"time":') + 9, text.index('"state_sha256":') + 20,
               text.index('"changes":') + 11, text.index('"host":') + 8}
    kinds = set()
    for offset in sorted(offsets):
        for value in range(256):
            if value != line[offset]:
                kinds.add(check_byte_edit(area, lines, 1, offset, value))
    assert {"bad_json", "not_canonical", "bad_entry", "seq_gap", "seq_order", "prev_root_mismatch"} <= kinds


def test_sampled_byte_edits_in_a_1000_entry_ledger(scratch):
    area, lines, _checkpoint = scratch(1000)
    rng = random.Random(1000)
    for k in rng.sample(range(1000), 150) + [0, 999]:
        offset = rng.randrange(len(lines[k]))
        check_byte_edit(area, lines, k, offset, rng.choice([v for v in range(256) if v != lines[k][offset]]))


@pytest.mark.parametrize("size", [2, 3, 7, 8, 9, 31, 1000])
def test_reordered_deleted_and_duplicated_entries(scratch, size):
    area, lines, _checkpoint = scratch(size)
    n = size
    # Every position in small ledgers; the ends, the middle and a sample in the large one.
    positions = range(n) if n <= 31 else sorted({0, 1, n // 2, n - 2, n - 1} | set(random.Random(n).sample(range(n), 12)))
    for k in (k for k in positions if k < n - 1):
        swapped = list(lines)
        swapped[k], swapped[k + 1] = swapped[k + 1], swapped[k]
        assert first(area.verify(swapped)) == ("seq_gap", k), ("swap", k)
    if n > 2:
        for a, b in [(0, n - 1), (1, n - 1), (0, n // 2)]:
            swapped = list(lines)
            swapped[a], swapped[b] = swapped[b], swapped[a]
            result = area.verify(swapped)
            assert first(result) == ("seq_gap", a), ("swap", a, b)
            assert {"seq_gap", "seq_order"} <= {p["kind"] for p in result["problems"]}
    for k in (k for k in positions if 0 < k < n - 1):
        assert first(area.verify(lines[:k] + lines[k + 1:])) == ("seq_gap", k), ("delete", k)
    assert first(area.verify(lines[1:])) == ("seq_gap", 0)
    assert first(area.verify(lines[:-1])) == ("head_size_mismatch", None)
    for k in positions:
        result = area.verify(lines[:k + 1] + [lines[k]] + lines[k + 1:])
        assert first(result) == ("seq_order", k + 1), ("duplicate", k)
        if k + 1 == n:
            assert ("head_size_mismatch", None) in {(p["kind"], p["seq"]) for p in result["problems"]}
    for k in (k for k in positions if k < n - 1):
        # A line lost its newline and ran into the next one.
        merged = lines[:k] + [lines[k] + lines[k + 1]] + lines[k + 2:]
        assert first(area.verify(merged)) == ("bad_json", k), ("merge", k)


def test_missing_final_newline_is_reported(scratch):
    area, lines, _checkpoint = scratch(3)
    write_file(area.directory, "ledger.jsonl", b"\n".join(lines))
    write_file(area.directory, "head.json", area.head)
    result = area.ledger.verify()
    assert first(result) == ("head_length_mismatch", None)
    assert "no newline" in result["problems"][0]["detail"]


def edit_head(head_bytes, **changes):
    head = json.loads(head_bytes)
    head.update(changes)
    return canonical_json(head) + b"\n"


def test_edited_head_json(scratch):
    area, lines, checkpoint = scratch(7)
    head = json.loads(area.head)
    flip = "0" if head["root"][0] != "0" else "1"
    assert first(area.verify(lines, head=edit_head(area.head, root=flip + head["root"][1:]))) == \
        ("head_root_mismatch", None)
    frontier = list(head["frontier"])
    frontier[1] = flip + frontier[1][1:]
    assert first(area.verify(lines, head=edit_head(area.head, frontier=frontier))) == ("head_frontier_mismatch", None)
    assert first(area.verify(lines, head=edit_head(area.head, length=head["length"] + 1))) == \
        ("head_length_mismatch", None)
    assert first(area.verify(lines, head=edit_head(area.head, length=head["length"] - 1))) == \
        ("head_length_mismatch", None)
    # 7 -> 11 keeps three frontier nodes, so head.json is well-formed but wrong.
    assert first(area.verify(lines, head=edit_head(area.head, size=11))) == ("head_size_mismatch", None)
    for bad in (edit_head(area.head, size=8), edit_head(area.head, version=2), b"{", b"", b"[]",
                edit_head(area.head, root=head["root"].upper()), edit_head(area.head, origin="")):
        assert first(area.verify(lines, head=bad)) == ("bad_head", None), bad
    os.unlink(os.path.join(area.directory, "head.json"))
    write_lines(area.directory, lines)
    assert first(area.ledger.verify()) == ("bad_head", None)


def test_origin_is_checked_against_anchors_only(scratch):
    area, lines, checkpoint = scratch(7)
    renamed = edit_head(area.head, origin="opdbus:elsewhere:00")
    assert area.verify(lines, head=renamed)["valid"]
    result = area.verify(lines, head=renamed, anchor=checkpoint)
    assert first(result) == ("anchor_origin_mismatch", None)


def test_rolled_back_head_looks_like_an_interrupted_append(scratch):
    area, lines, _checkpoint = scratch(7)
    frontier = Frontier()
    for line in lines[:6]:
        frontier.append(leaf_hash(line))
    head = json.loads(area.head)
    rolled_back = canonical_json({"version": 1, "origin": head["origin"], "size": 6,
                                  "length": sum(len(line) + 1 for line in lines[:6]),
                                  "root": frontier.root().hex(), "frontier": frontier.to_hex()}) + b"\n"
    result = area.verify(lines, head=rolled_back)
    assert result["valid"]
    assert [(r["kind"], r["seq"]) for r in result["recoverable"]] == [("head_lag", 6)]
    assert result["checkpoint"]["size"] == 7


def rewrite_from(lines, k, origin, directory):
    """A consistent ledger: lines[:k] kept, every later entry replaced, prev_roots recomputed."""
    frontier = Frontier()
    for line in lines[:k]:
        frontier.append(leaf_hash(line))
    new_lines = list(lines[:k])
    for line in lines[k:]:
        entry = json.loads(line)
        entry["action"] = "rewritten"
        entry["prev_root"] = frontier.root().hex()
        new = canonical_json(entry)
        frontier.append(leaf_hash(new))
        new_lines.append(new)
    return write_ledger(directory, new_lines, origin=origin)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 1000])
def test_truncation_and_rewrites_need_an_anchor(tmp_path, base, size):
    lines, _head, checkpoint = base(size)
    origin = checkpoint["origin"]
    directory = str(tmp_path / "bc")
    ledger = Ledger(directory)
    leaves = [leaf_hash(line) for line in lines]
    anchors = {n: {"origin": origin, "size": n, "root": root_from_leaf_hashes(leaves[:n]).hex()}
               for n in range(size + 1)}
    assert anchors[size] == checkpoint
    for keep in sorted({0, 1, size // 2, size - 1} - {size}):
        write_ledger(directory, lines[:keep], origin=origin)
        assert ledger.verify()["valid"], keep
        assert first(ledger.verify(anchor=checkpoint)) == ("anchor_truncated", keep)
        assert ledger.verify(anchor=anchors[keep])["valid"]
    for k in sorted({0, size // 2, size - 1}):
        rewrite_from(lines, k, origin, directory)
        assert ledger.verify()["valid"], k
        assert first(ledger.verify(anchor=checkpoint)) == ("anchor_inconsistent", None), k
        assert first(ledger.verify(anchor=anchors[k + 1])) == ("anchor_inconsistent", None), k
        assert ledger.verify(anchor=anchors[k])["valid"], k
    write_ledger(directory, lines, origin="opdbus:tamper-host:" + "ab" * 16)
    assert first(ledger.verify(anchor=checkpoint)) == ("anchor_origin_mismatch", None)


def test_malformed_anchors(tmp_path, base):
    lines, head, checkpoint = base(3)
    directory = str(tmp_path / "bc")
    write_ledger(directory, lines, origin=checkpoint["origin"])
    ledger = Ledger(directory)
    for anchor in ({}, [], "x", {"origin": checkpoint["origin"], "size": -1, "root": checkpoint["root"]},
                   {"origin": checkpoint["origin"], "size": "3", "root": checkpoint["root"]},
                   {"origin": checkpoint["origin"], "size": True, "root": checkpoint["root"]},
                   {"origin": checkpoint["origin"], "size": 3, "root": checkpoint["root"].upper()},
                   {"origin": checkpoint["origin"], "size": 3, "root": checkpoint["root"][:-2]},
                   {"origin": 5, "size": 3, "root": checkpoint["root"]},
                   {"origin": None, "size": 3, "root": checkpoint["root"]}):
        assert first(ledger.verify(anchor=anchor)) == ("bad_anchor", None), anchor
    empty = {"origin": None, "size": 0, "root": EMPTY_ROOT.hex()}
    assert ledger.verify(anchor=empty)["valid"]
    assert first(ledger.verify(anchor=dict(empty, root=checkpoint["root"]))) == ("anchor_inconsistent", None)
    assert ledger.verify(anchor=checkpoint)["valid"]


def test_removed_ledger_directory_is_caught_by_the_anchor(tmp_path, base):
    checkpoint = base(3)[2]
    ledger = Ledger(str(tmp_path / "gone"))
    result = ledger.verify()
    assert result["valid"] and result["checkpoint"] == {"origin": None, "size": 0, "root": EMPTY_ROOT.hex()}
    assert first(ledger.verify(anchor=checkpoint)) == ("anchor_truncated", 0)


# -- The two-process verifier gives exactly the single-process answers ----------------------------

def tampered_variants(lines):
    n = len(lines)
    yield "intact", lines
    for k in (0, 1, n // 2 - 1, n // 2, n // 2 + 1, n - 2, n - 1):
        edited = json.loads(lines[k])
        edited["actor"] = "mallory"
        yield "edit %d" % k, lines[:k] + [canonical_json(edited)] + lines[k + 1:]
        yield "garble %d" % k, lines[:k] + [lines[k][:-3]] + lines[k + 1:]
        yield "delete %d" % k, lines[:k] + lines[k + 1:]
        yield "duplicate %d" % k, lines[:k + 1] + lines[k:]
    yield "swap halves", lines[n // 2:] + lines[:n // 2]


def test_two_processes_agree_with_one(scratch, monkeypatch):
    area, lines, checkpoint = scratch(31)
    for name, variant in tampered_variants(lines):
        monkeypatch.setattr(ledger_verify, "_PARALLEL_MIN_LINES", 10 ** 9)
        serial = area.verify(variant, anchor=checkpoint)
        monkeypatch.setattr(ledger_verify, "_PARALLEL_MIN_LINES", 2)
        parallel = area.verify(variant, anchor=checkpoint)
        assert parallel == serial, name
        assert serial["valid"] == (name == "intact"), name


def test_large_ledger_verified_in_two_processes(tmp_path):
    size = 2 * ledger_verify._PARALLEL_MIN_LINES + 1
    lines, _frontier = entry_lines(size, seed=7)
    directory = str(tmp_path / "bc")
    checkpoint = write_ledger(directory, lines)
    ledger = Ledger(directory)
    intact = {"valid": True, "problems": [], "recoverable": [], "interrupted": [], "checkpoint": checkpoint}
    anchored = ledger.verify(anchor=checkpoint)
    assert anchored.pop("anchor_proof") == {"old_size": size, "old_root": checkpoint["root"], "size": size,
                                            "root": checkpoint["root"], "proof": []}
    assert anchored == intact
    half = size // 2
    for k in (half - 1, half, size - 2):
        edited = json.loads(lines[k])
        edited["changes"] = []
        write_lines(directory, lines[:k] + [canonical_json(edited)] + lines[k + 1:])
        result = ledger.verify()
        assert first(result) == ("prev_root_mismatch", k + 1), k
        # Every later prev_root breaks too; they are counted, not listed.
        assert ("more of this kind" in result["problems"][0]["detail"]) == (k + 2 < size), k
