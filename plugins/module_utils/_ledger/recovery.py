# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash residue: what an interrupted append can leave after the end head.json records, and how it is read.

The next writer adopts complete entries and drops a torn last line (see docs/ledger.md, "Crashes").
"""

from __future__ import annotations


from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import check_line, split_lines
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import leaf_hash


class Residue:
    """What an interrupted append can leave after the end head.json records.

    ``lines`` are complete, valid entries that continue the ledger (an append was interrupted
    after writing its line, or head.json's rename was lost in a power failure); ``torn`` is the
    byte count of an unfinished last line. ``foreign`` is set when the bytes are anything else,
    which no crash produces.
    """

    def __init__(self, tail, frontier):
        self.lines = []
        self.torn = 0
        self.foreign = False
        self.first = frontier.size
        self.frontier = frontier.copy()
        pieces = tail.split(b"\n")
        unterminated = pieces.pop()
        for i, line in enumerate(pieces):
            entry, problems = check_line(line, self.frontier.size, self.frontier.root().hex())
            if not problems:
                self.frontier.append(leaf_hash(line))
                self.lines.append(line)
            elif i == len(pieces) - 1 and not unterminated and problems[0][0] == "bad_json":
                # A complete line that is not even JSON can only be the remains of a write that
                # never finished (a power failure can leave garbage up to a newline).
                self.torn = len(line) + 1
            else:
                self.foreign = True
                return
        if unterminated:
            self.torn = len(unterminated)

    def items(self):
        """The residue as ``recoverable`` items, shaped like verification problems."""
        items = []
        if self.lines:
            last = self.first + len(self.lines) - 1
            which = "entry %d" % last if last == self.first else "entries %d to %d" % (self.first, last)
            one = last == self.first
            items.append({"seq": self.first, "kind": "head_lag", "detail": (
                "%s %s complete and valid but not yet covered by head.json (an append was interrupted after writing "
                "its entry, or a power failure lost head.json's update); the next append adopts %s"
                % (which, "is" if one else "are", "it" if one else "them"))})
        if self.torn:
            items.append({"seq": self.frontier.size, "kind": "torn_tail", "detail": (
                "ledger.jsonl ends with %d bytes of an unfinished entry %d (an append was interrupted before "
                "it was acknowledged); the next append removes them" % (self.torn, self.frontier.size))})
        return items


class FileSnapshot:
    __slots__ = ("exists", "head", "head_error", "data")

    def __init__(self, exists, head=None, head_error=None, data=b""):
        self.exists = exists
        self.head = head
        self.head_error = head_error
        self.data = data


class Layout:
    """How a snapshot's bytes divide into acknowledged lines, crash residue and the rest."""

    def __init__(self, snapshot):
        data = snapshot.data
        head = snapshot.head
        # Only a head that ends on a line boundary inside the file can delimit residue; any other
        # mismatch between head.json and ledger.jsonl is for the verifier to report.
        if head is not None and head.length <= len(data) and (head.length == 0 or data[head.length - 1] == 10):
            covered_end = head.length
        else:
            covered_end = len(data)
        self.lines = split_lines(data[:covered_end])
        self.tail = data[covered_end:]
        self.covered_length = covered_end
        self.ends_with_newline = covered_end == 0 or data[covered_end - 1] == 10
