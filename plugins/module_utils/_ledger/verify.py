# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification: re-derive the Merkle tree from the stored bytes and report every problem.

A large ledger is checked in two processes (the second half by a forked child), since checking a
line needs only the frontier where its stretch starts.
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import write_all
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.anchors import parse_checkpoint
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import (
    INTENT_ACTION,
    INTERRUPTED_ACTION,
    check_line,
    is_int,
    split_lines,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import (
    Frontier,
    consistency_proof,
    root_from_leaf_hashes,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recovery import Layout, Residue


_sha256 = hashlib.sha256

# Below this many lines a second process costs more than it saves.
_PARALLEL_MIN_LINES = 20000


class Findings:
    """Problems found by one verification: the first of each kind, with a count of the rest.

    One tampered entry usually breaks every later prev_root as well; listing each of those
    would bury the entry that matters.
    """

    def __init__(self):
        self.items = []
        self.more = {}
        self._first = {}
        # Runs, noted from the entries as they are checked: intents by seq, and for each intent
        # seq the first entry that names it as its intent (its outcome, or an interrupted entry).
        self.intents = {}
        self.outcomes = {}

    def note_entry(self, seq, entry):
        if entry.get("action") == INTENT_ACTION:
            self.intents[seq] = entry
            return
        changes = entry.get("changes")
        if isinstance(changes, dict):
            intent = changes.get("intent")
            if intent is not None and is_int(intent) and intent not in self.outcomes:
                self.outcomes[intent] = entry

    def add(self, seq, kind, detail):
        if kind in self._first:
            self.more[kind] = self.more.get(kind, 0) + 1
            return
        item = {"seq": seq, "kind": kind, "detail": detail}
        self._first[kind] = item
        self.items.append(item)

    def merge(self, items, more, intents, outcomes):
        """Add the findings of a later stretch of the ledger checked separately (keys arrive as JSON strings)."""
        for item in items:
            self.add(item["seq"], item["kind"], item["detail"])
        for kind, count in more.items():
            self.more[kind] = self.more.get(kind, 0) + count
        self.intents.update((int(seq), entry) for seq, entry in intents.items())
        for seq, entry in outcomes.items():
            self.outcomes.setdefault(int(seq), entry)

    def interrupted(self):
        """Runs whose intent no outcome of their own followed, oldest first.

        Each is ``{seq, action, planned, time, resolved_by}``: ``resolved_by`` is the seq of the
        ``interrupted`` entry a later run appended for it, or None while no run has come since.
        """
        runs = []
        for seq, intent in sorted(self.intents.items()):
            outcome = self.outcomes.get(seq)
            if outcome is not None and outcome.get("action") != INTERRUPTED_ACTION:
                continue
            changes = intent.get("changes") if isinstance(intent.get("changes"), dict) else {}
            runs.append({"seq": seq, "action": changes.get("for"), "planned": changes.get("planned", []),
                         "time": intent.get("time"), "resolved_by": outcome.get("seq") if outcome else None,
                         "detail": "interrupted run: the actions it planned may have happened, in part or in full; "
                                   "the entries after it record the state that later runs found"})
        return runs

    def result(self):
        for kind, count in self.more.items():
            self._first[kind]["detail"] += " (%d more of this kind not listed)" % count
        return self.items


def root_hex(leaves, size):
    return root_from_leaf_hashes(leaves[:size]).hex()


def _scan(lines, frontier, leaves, findings):
    """Check consecutive lines as the entries after ``frontier``, extending it and ``leaves``."""
    new_leaves = [_sha256(b"\x00" + raw).digest() for raw in lines]
    if len(lines) >= _PARALLEL_MIN_LINES and _usable_cpus() > 1:
        _scan_in_two_processes(lines, new_leaves, frontier, findings)
    else:
        _check_lines(lines, frontier.extend_with_roots(new_leaves), frontier.size - len(lines), findings)
    leaves.extend(new_leaves)


def _check_lines(lines, roots, position, findings):
    check = check_line
    note = findings.note_entry
    for raw, root in zip(lines, roots):
        entry, problems = check(raw, position, root.hex())
        if problems:
            for kind, detail in problems:
                findings.add(position, kind, detail)
        if entry is not None:
            note(position, entry)
        position += 1


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _scan_in_two_processes(lines, leaves, frontier, findings):
    """``_scan``'s checks with the second half of the lines done by a forked child.

    Parsing and re-encoding each line and folding the frontier into each expected prev_root
    need nothing but the frontier where a stretch of lines starts, which costs one hash per leaf
    to reach, so a second CPU nearly halves the time to verify a large ledger.
    """
    first = frontier.size
    half = len(lines) // 2
    start = frontier.copy()

    def second_half():
        theirs = Findings()
        start.extend(leaves[:half])
        _check_lines(lines[half:], start.extend_with_roots(leaves[half:]), first + half, theirs)
        return [theirs.items, theirs.more, theirs.intents, theirs.outcomes]

    wait = _start_forked(second_half)
    try:
        _check_lines(lines[:half], frontier.extend_with_roots(leaves[:half]), first, findings)
    finally:
        result = wait() if wait else None
    findings.merge(*(result or second_half()))
    frontier.extend(leaves[half:])


def _start_forked(work):
    """Run ``work()`` in a forked child; return a function that waits for its JSON result.

    The child inherits memory copy-on-write and sends back only the result. Returns None when
    no child could be started, and the waiting function returns None when the child failed, so
    the caller can always fall back to doing the work itself.
    """
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            write_all(write_fd, json.dumps(work()).encode("utf-8"))
            status = 0
        finally:
            # Never return into the caller's code, flush its buffers or run its exit handlers.
            os._exit(status)
    os.close(write_fd)

    def wait():
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                payload = pipe.read()
        finally:
            status = os.waitpid(pid, 0)[1]
        return json.loads(payload.decode("utf-8")) if status == 0 else None

    return wait


def verify_snapshot(snapshot, anchor):
    findings = Findings()
    recoverable = []
    frontier = Frontier()
    leaves = []
    head = snapshot.head
    if snapshot.head_error is not None:
        findings.add(None, "bad_head", snapshot.head_error)
    elif snapshot.exists and head is None and snapshot.data:
        findings.add(None, "bad_head", "head.json is missing although ledger.jsonl holds %d bytes"
                     % len(snapshot.data))

    layout = Layout(snapshot)
    _scan(layout.lines, frontier, leaves, findings)
    if head is not None:
        _check_head(head, layout, frontier, findings)
    if layout.tail:
        residue = Residue(layout.tail, frontier)
        if residue.foreign:
            extra = split_lines(layout.tail)
            _scan(extra, frontier, leaves, findings)
            findings.add(None, "head_size_mismatch",
                         "ledger.jsonl holds %d line(s) after the %d entries head.json covers that no interrupted "
                         "append explains" % (len(extra), head.size))
        else:
            recoverable = residue.items()
            _scan(residue.lines, frontier, leaves, findings)

    checkpoint = {"origin": head.origin if head is not None else None, "size": frontier.size,
                  "root": frontier.root().hex()}
    result = {"checkpoint": checkpoint, "recoverable": recoverable, "interrupted": findings.interrupted()}
    if anchor is not None:
        proof = _check_anchor(anchor, checkpoint, leaves, findings)
        if proof is not None:
            result["anchor_proof"] = proof
    problems = findings.result()
    result.update(valid=not problems, problems=problems)
    return result


def _check_head(head, layout, frontier, findings):
    """Compare head.json with what the acknowledged lines hash to; one finding per disagreement."""
    if frontier.size != head.size:
        findings.add(None, "head_size_mismatch", "head.json records %d entries but ledger.jsonl holds %d: entries "
                     "were added or removed outside the ledger code" % (head.size, frontier.size))
        return
    if layout.covered_length != head.length:
        hint = "" if layout.ends_with_newline else " (its last line has no newline)"
        findings.add(None, "head_length_mismatch", "head.json records %d bytes of entries but ledger.jsonl holds %d%s"
                     % (head.length, layout.covered_length, hint))
    if frontier.root() != head.root:
        findings.add(None, "head_root_mismatch",
                     "head.json's root does not match the Merkle root of ledger.jsonl's %d entries: the last entry "
                     "or head.json was altered" % head.size)
    elif frontier.nodes != head.frontier.nodes:
        findings.add(None, "head_frontier_mismatch", "head.json's frontier does not match ledger.jsonl: the next "
                     "append would compute a wrong prev_root")


def _check_anchor(anchor, checkpoint, leaves, findings):
    """Check that the ledger extends ANCHOR; returns the consistency proof (hex) that lets the controller
    check it independently with merkle.verify_consistency, or None when there is no such proof."""
    try:
        origin, size, root = parse_checkpoint(anchor)
    except ValueError as exc:
        findings.add(None, "bad_anchor", str(exc))
        return None
    if origin is not None and checkpoint["origin"] is not None and origin != checkpoint["origin"]:
        findings.add(None, "anchor_origin_mismatch", "the anchor is a checkpoint of ledger %s but this ledger is %s: "
                     "the ledger was replaced or the anchor belongs to another host"
                     % (origin, checkpoint["origin"]))
        return None
    current = checkpoint["size"]
    if size > current:
        findings.add(current, "anchor_truncated", "the anchor saw %d entries but the ledger now holds %d: entries "
                     "%d and later were removed" % (size, current, current))
        return None
    if root_from_leaf_hashes(leaves[:size]) != root:
        findings.add(None, "anchor_inconsistent", "the ledger's first %d entries no longer hash to the anchor's root: "
                     "entries the anchor saw were rewritten" % size)
    return {"old_size": size, "old_root": root.hex(), "size": current, "root": checkpoint["root"],
            "proof": [node.hex() for node in consistency_proof(leaves, size)]}
