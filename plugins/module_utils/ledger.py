# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Append-only, tamper-evident ledger of op-dbus changes.

The file format, the crash semantics and the threat model are described in docs/ledger.md;
the comments here explain only why the code is shaped the way it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import socket
import stat
import time
from datetime import datetime, timezone

from ansible_collections.opdbus.fleet.plugins.module_utils.errors import OpdbusError, describe_os_error
from ansible_collections.opdbus.fleet.plugins.module_utils.files import flock_within, fsync_directory, make_directories
from ansible_collections.opdbus.fleet.plugins.module_utils.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
)

DEFAULT_LEDGER_DIR = "/var/lib/op-dbus/blockchain"
DEFAULT_LOCK_TIMEOUT = 30.0
LEDGER_FILE = "ledger.jsonl"
HEAD_FILE = "head.json"
LOCK_FILE = "lock"
RUN_LOCK_FILE = "run.lock"
DEFAULT_RUN_LOCK_TIMEOUT = 120.0
# The action of the entry a run appends before its first change (see RecordedRun).
INTENT_ACTION = "intent"
# What to do about damage, in every message that finds some.
INVESTIGATE = "verify the ledger with the opdbus.fleet.opdbus_ledger_info module, which lists every problem, and investigate"
INTERRUPTED_ACTION = "interrupted"
FORMAT_VERSION = 1
ENTRY_FIELDS = ("action", "actor", "changes", "host", "prev_root", "seq", "state_sha256", "time")

_ENTRY_KEYS = frozenset(ENTRY_FIELDS)
_HEAD_KEYS = frozenset(("version", "origin", "size", "length", "root", "frontier"))
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_EMPTY_ROOT_HEX = EMPTY_ROOT.hex()
_sha256 = hashlib.sha256
# Below this many lines a second process costs more than it saves.
_PARALLEL_MIN_LINES = 20000


class LedgerError(OpdbusError):
    """An operational failure (permissions, lock timeout, damaged files); the message says what to do."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# Parsed JSON cannot contain reference cycles, so the verifier's encoder skips the cycle
# bookkeeping; it is otherwise identical to _CANONICAL and measurably faster.
_CANONICAL_ACYCLIC = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                      allow_nan=False, check_circular=False)


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def canonical_json(obj):
    """The one canonical encoding: sorted keys, no whitespace, UTF-8 without escapes, no NaN.

    Raises TypeError for values JSON cannot represent and ValueError for NaN, infinities and
    strings that are not valid Unicode.
    """
    return _CANONICAL.encode(obj).encode("utf-8")


def _utc_now():
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _valid_time(value):
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


def _is_int(value):
    # JSON true and false arrive as bools, which Python also counts as ints.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value):
    return _is_int(value) and value >= 0


def _check_line(raw, position, prev_root):
    """Parse one stored line (without its newline) and check it as the entry at ``position``.

    ``prev_root`` is the hex root of the ledger's first ``position`` lines. Returns
    ``(entry, problems)``: ``entry`` is the parsed object or None when the line is not a JSON
    object, ``problems`` is None for a good entry or a list of ``(kind, detail)``.
    """
    try:
        text = raw.decode("utf-8")
        obj, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError) as exc:
        return None, [("bad_json", "entry %d (line %d) is not valid UTF-8 JSON: %s" % (position, position + 1, exc))]
    if end != len(text):
        return None, [("bad_json", "entry %d (line %d) is not valid JSON: extra data after column %d"
                       % (position, position + 1, end + 1))]
    try:
        canonical = _CANONICAL_ACYCLIC.encode(obj) == text
    except (ValueError, RecursionError):
        # An exponent such as 1e999 parses to infinity, which has no JSON encoding.
        canonical = False
    # One expression for the common case; the slow path below works out what exactly is wrong.
    if (canonical and isinstance(obj, dict) and obj.keys() == _ENTRY_KEYS
            and _is_int(obj["seq"]) and obj["seq"] == position and obj["prev_root"] == prev_root
            and isinstance(obj["host"], str) and obj["host"] and isinstance(obj["action"], str) and obj["action"]
            and isinstance(obj["actor"], str) and isinstance(obj["changes"], (list, dict))
            and (obj["state_sha256"] is None or isinstance(obj["state_sha256"], str)
                 and _HEX_DIGEST.fullmatch(obj["state_sha256"]))
            and _valid_time(obj["time"])):
        return obj, None
    return _diagnose(obj, canonical, position, prev_root)


def _diagnose(obj, canonical, position, prev_root):
    if not isinstance(obj, dict):
        return None, [("bad_entry", "entry %d (line %d) is JSON but not an object" % (position, position + 1))]
    problems = []
    if not canonical:
        problems.append(("not_canonical", "entry %d (line %d) is not canonical JSON (sorted keys, no whitespace, "
                                          "unescaped UTF-8, one object per line)" % (position, position + 1)))
    seq = obj.get("seq")
    if _is_int(seq) and seq != position:
        if seq > position:
            problems.append(("seq_gap", "line %d holds seq %d where seq %d belongs: entries before it are missing "
                                        "or out of order" % (position + 1, seq, position)))
        else:
            problems.append(("seq_order", "line %d holds seq %d where seq %d belongs: the entry is duplicated or "
                                          "out of order" % (position + 1, seq, position)))
    bad = _field_errors(obj)
    if bad:
        problems.append(("bad_entry", "entry %d (line %d): %s" % (position, position + 1, "; ".join(bad))))
    if "prev_root" in obj and obj["prev_root"] != prev_root:
        problems.append(("prev_root_mismatch", _prev_root_detail(position)))
    return obj, problems


def _prev_root_detail(position):
    if position == 0:
        return "entry 0's prev_root is not the root of the empty ledger: entries before it were removed or it was altered"
    return ("entry %d's prev_root does not match the Merkle root of the %d entries before it: entry %d, or this "
            "entry's prev_root, was altered, removed or moved" % (position, position, position - 1))


def _field_errors(obj):
    if obj.keys() != _ENTRY_KEYS:
        errors = []
        missing = sorted(_ENTRY_KEYS - obj.keys())
        unknown = sorted(obj.keys() - _ENTRY_KEYS)
        if missing:
            errors.append("missing fields %s" % ", ".join(missing))
        if unknown:
            errors.append("unknown fields %s" % ", ".join(unknown))
        return errors
    errors = []
    if not _is_int(obj["seq"]) or obj["seq"] < 0:
        errors.append("seq is not a non-negative integer")
    if not _valid_time(obj["time"]):
        errors.append("time is not a UTC timestamp like 2024-05-01T12:00:00.000000Z")
    for field in ("host", "action"):
        if not isinstance(obj[field], str) or not obj[field]:
            errors.append("%s is not a non-empty string" % field)
    if not isinstance(obj["actor"], str):
        errors.append("actor is not a string")
    if not isinstance(obj["changes"], (list, dict)):
        errors.append("changes is neither a list nor an object")
    if obj["state_sha256"] is not None and not (isinstance(obj["state_sha256"], str)
                                                and _HEX_DIGEST.fullmatch(obj["state_sha256"])):
        errors.append("state_sha256 is neither null nor a lowercase hex SHA-256")
    if not isinstance(obj["prev_root"], str) or not _HEX_DIGEST.fullmatch(obj["prev_root"]):
        errors.append("prev_root is not a lowercase hex SHA-256")
    return errors


class _Head:
    """The acknowledged end of the ledger, as stored in head.json."""

    __slots__ = ("origin", "size", "length", "root", "frontier")

    def __init__(self, origin, size, length, root, frontier):
        self.origin = origin
        self.size = size
        self.length = length
        self.root = root
        self.frontier = frontier

    @classmethod
    def from_frontier(cls, origin, length, frontier):
        return cls(origin, frontier.size, length, frontier.root(), frontier)

    @classmethod
    def parse(cls, raw):
        """Parse head.json's bytes; ValueError says what is wrong."""
        try:
            obj = _DECODER.decode(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ValueError("head.json is not valid UTF-8 JSON: %s" % exc) from None
        if not isinstance(obj, dict) or obj.keys() != _HEAD_KEYS:
            raise ValueError("head.json must be an object with exactly the fields %s" % ", ".join(sorted(_HEAD_KEYS)))
        if obj["version"] != FORMAT_VERSION:
            raise ValueError("head.json has format version %r; this collection reads version %d"
                             % (obj["version"], FORMAT_VERSION))
        if not isinstance(obj["origin"], str) or not obj["origin"]:
            raise ValueError("head.json's origin is not a non-empty string")
        if not (_is_count(obj["size"]) and _is_count(obj["length"])):
            raise ValueError("head.json's size and length must be non-negative integers")
        if not isinstance(obj["root"], str) or not _HEX_DIGEST.fullmatch(obj["root"]):
            raise ValueError("head.json's root is not a lowercase hex SHA-256")
        try:
            frontier = Frontier.from_hex(obj["size"], obj["frontier"])
        except ValueError as exc:
            raise ValueError("head.json's frontier is invalid: %s" % exc) from None
        return cls(obj["origin"], obj["size"], obj["length"], bytes.fromhex(obj["root"]), frontier)

    def to_json(self):
        return {"version": FORMAT_VERSION, "origin": self.origin, "size": self.size, "length": self.length,
                "root": self.root.hex(), "frontier": self.frontier.to_hex()}

    def checkpoint(self):
        return {"origin": self.origin, "size": self.size, "root": self.root.hex()}


class _Findings:
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
            if intent is not None and _is_int(intent) and intent not in self.outcomes:
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


class _Residue:
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
            entry, problems = _check_line(line, self.frontier.size, self.frontier.root().hex())
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


class _Snapshot:
    __slots__ = ("exists", "head", "head_error", "data")

    def __init__(self, exists, head=None, head_error=None, data=b""):
        self.exists = exists
        self.head = head
        self.head_error = head_error
        self.data = data


class _Layout:
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
        self.lines = _split_lines(data[:covered_end])
        self.tail = data[covered_end:]
        self.covered_length = covered_end
        self.ends_with_newline = covered_end == 0 or data[covered_end - 1] == 10


def _split_lines(chunk):
    lines = chunk.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _oserror(action, path, exc):
    return LedgerError("cannot %s %s: %s" % (action, path, describe_os_error(exc)))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_file(path):
    with open(path, "rb") as handle:
        return handle.read()


class Ledger:
    """The ledger in one directory. Cheap to construct: nothing is read or created until used.

    Writers (``append``) serialise on an exclusive flock of ``<directory>/lock``; readers take a
    shared lock only long enough to copy the files, so verification never blocks writers for
    longer than a read of the files.
    """

    def __init__(self, directory=DEFAULT_LEDGER_DIR, host=None, lock_timeout=DEFAULT_LOCK_TIMEOUT):
        self.directory = os.path.abspath(directory)
        self.host = host or socket.gethostname()
        self.lock_timeout = lock_timeout
        self.ledger_path = os.path.join(self.directory, LEDGER_FILE)
        self.head_path = os.path.join(self.directory, HEAD_FILE)
        self.lock_path = os.path.join(self.directory, LOCK_FILE)
        # (stat identity of head.json, size of ledger.jsonl, head) as this object last left them:
        # consecutive appends then skip re-reading and re-checking files nobody else has touched.
        # After an append with defer_head the head is newer than head.json, and covers the line.
        self._known_head = None

    # -- locking and reading ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, exclusive):
        try:
            if exclusive:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            else:
                fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # No writer has ever initialised this directory, so there is nothing to be consistent with.
            fd = None
        except OSError as exc:
            raise _oserror("open the ledger lock", self.lock_path, exc) from None
        if fd is None:
            yield
            return
        try:
            if not flock_within(fd, exclusive, self.lock_timeout):
                raise LedgerError("timed out after %gs waiting for the ledger lock %s: another op-dbus run "
                                  "is using the ledger (see `fuser -v %s`)"
                                  % (self.lock_timeout, self.lock_path, self.lock_path))
            yield
        finally:
            os.close(fd)

    def _snapshot(self):
        """Copy head.json and ledger.jsonl as of one moment between appends."""
        if not self._exists():
            return _Snapshot(exists=False)
        with self._locked(exclusive=False):
            head = head_error = None
            try:
                head = _Head.parse(_read_file(self.head_path))
            except FileNotFoundError:
                pass
            except ValueError as exc:
                head_error = str(exc)
            except OSError as exc:
                raise _oserror("read", self.head_path, exc) from None
            try:
                data = _read_file(self.ledger_path)
            except FileNotFoundError:
                data = b""
            except OSError as exc:
                raise _oserror("read", self.ledger_path, exc) from None
        return _Snapshot(True, head, head_error, data)

    def _accepted_lines(self, snapshot):
        """The lines that make up the ledger once crash residue is recovered (torn tail dropped)."""
        layout = _Layout(snapshot)
        lines = layout.lines
        if layout.tail:
            frontier = Frontier()
            frontier.extend(leaf_hash(raw) for raw in lines)
            residue = _Residue(layout.tail, frontier)
            lines.extend(_split_lines(layout.tail) if residue.foreign else residue.lines)
        return lines

    # -- reading ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self):
        """Keep writers out so that several reads (``verify`` then ``entries``, say) see one ledger.

        Do not ``append`` inside: the writer would wait for this very lock until it times out.
        """
        if not self._exists():
            yield
            return
        with self._locked(exclusive=False):
            yield

    def checkpoint(self):
        """``{origin, size, root}`` of the ledger, without reading more than head.json and any residue.

        Adoptable crash residue is counted, as the next append will. Nothing is verified (that is
        ``verify``'s job), and a ledger that was never written has origin None, size 0 and the
        empty root.
        """
        if not self._exists():
            return {"origin": None, "size": 0, "root": _EMPTY_ROOT_HEX}
        with self._locked(exclusive=False):
            try:
                head = _Head.parse(_read_file(self.head_path))
            except FileNotFoundError:
                return {"origin": None, "size": 0, "root": _EMPTY_ROOT_HEX}
            except ValueError as exc:
                raise LedgerError("%s; %s" % (exc, INVESTIGATE)) from None
            except OSError as exc:
                raise _oserror("read", self.head_path, exc) from None
            tail = self._read_tail(head)
        if tail:
            residue = _Residue(tail, head.frontier)
            if residue.lines and not residue.foreign:
                return {"origin": head.origin, "size": residue.frontier.size, "root": residue.frontier.root().hex()}
        return head.checkpoint()

    def entries(self, since=None, limit=None):
        """Parsed entries, oldest first: seq >= ``since`` (negative counts from the end), at most ``limit``.

        Lines that are not JSON objects are skipped; ``verify`` reports them.
        """
        lines = select_entries(self._accepted_lines(self._snapshot()), since, limit)
        result = []
        for raw in lines:
            try:
                obj = _DECODER.decode(raw.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                result.append(obj)
        return result

    def last_entry(self):
        """The newest entry, counting crash residue the next append adopts; None for an empty ledger.

        Reads head.json and the end of ledger.jsonl only, and verifies nothing: a run uses it to
        see whether the run before it was interrupted (its intent is the last entry).
        """
        if not self._exists():
            return None
        with self._locked(exclusive=False):
            try:
                head = _Head.parse(_read_file(self.head_path))
            except FileNotFoundError:
                return None
            except ValueError as exc:
                raise LedgerError("%s; %s" % (exc, INVESTIGATE)) from None
            except OSError as exc:
                raise _oserror("read", self.head_path, exc) from None
            tail = self._read_tail(head)
            residue = _Residue(tail, head.frontier) if tail else None
            if residue is not None and residue.lines and not residue.foreign:
                raw = residue.lines[-1]
            elif head.size:
                raw = self._line_before(head.length)
            else:
                return None
        try:
            entry = _DECODER.decode(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            return None
        return entry if isinstance(entry, dict) else None

    def _line_before(self, end):
        """The line of ledger.jsonl that ends, with its newline, at byte END."""
        data = b""
        start = end - 1
        try:
            with open(self.ledger_path, "rb") as handle:
                while start > 0 and b"\n" not in data:
                    step = min(8192, start)
                    start -= step
                    handle.seek(start)
                    data = handle.read(step) + data
        except OSError as exc:
            raise _oserror("read", self.ledger_path, exc) from None
        return data[data.rfind(b"\n") + 1:]

    def inclusion_proof(self, seq):
        """Proof that entry ``seq`` is in the current tree: ``{seq, size, leaf_hash, root, proof}`` in hex."""
        leaves = [leaf_hash(raw) for raw in self._accepted_lines(self._snapshot())]
        if not _is_int(seq) or not 0 <= seq < len(leaves):
            raise ValueError("seq %r is not in a ledger of %d entries" % (seq, len(leaves)))
        return {"seq": seq, "size": len(leaves), "leaf_hash": leaves[seq].hex(),
                "root": _root_hex(leaves, len(leaves)),
                "proof": [p.hex() for p in inclusion_proof(leaves, seq)]}

    def consistency_proof(self, old_size):
        """Proof that the current tree extends its first ``old_size`` entries:
        ``{old_size, old_root, size, root, proof}`` in hex."""
        leaves = [leaf_hash(raw) for raw in self._accepted_lines(self._snapshot())]
        if not _is_int(old_size) or not 0 <= old_size <= len(leaves):
            raise ValueError("old size %r is not between 0 and the ledger's %d entries" % (old_size, len(leaves)))
        return {"old_size": old_size, "old_root": _root_hex(leaves, old_size),
                "size": len(leaves), "root": _root_hex(leaves, len(leaves)),
                "proof": [p.hex() for p in consistency_proof(leaves, old_size)]}

    # -- verification -------------------------------------------------------------------------

    def verify(self, anchor=None):
        """Re-derive everything from the stored bytes; never modifies anything.

        ``anchor`` is a checkpoint seen earlier (``{origin, size, root}``). Returns
        ``{valid, problems, recoverable, interrupted, checkpoint}`` (``interrupted`` lists the runs
        that died between their intent and their outcome; they do not make the ledger invalid), plus
        ``in_progress`` (the seq of the intent of a run still going) when there is one, plus ``anchor_proof`` (the consistency proof
        from the anchor's size, shaped as ``consistency_proof`` returns it) when there is one; crash residue is listed under
        ``recoverable`` and does not make the ledger invalid, and the checkpoint is the one the
        next append will build on.
        """
        result = _verify_snapshot(self._snapshot(), anchor)
        unresolved = [run for run in result["interrupted"] if run["resolved_by"] is None]
        if unresolved and unresolved[-1]["seq"] == result["checkpoint"]["size"] - 1 and self.run_in_progress():
            # The newest intent belongs to a run that is still going: it is not interrupted (yet).
            result["interrupted"].remove(unresolved[-1])
            result["in_progress"] = unresolved[-1]["seq"]
        return result

    def run_lock(self, purpose, timeout=DEFAULT_RUN_LOCK_TIMEOUT):
        return RunLock(self, purpose, timeout)

    def run_in_progress(self):
        """Whether a run holds this ledger's run lock right now."""
        try:
            fd = os.open(os.path.join(self.directory, RUN_LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- writing ------------------------------------------------------------------------------

    def append(self, action, changes, state_sha256=None, actor=None, defer_head=False):
        """Durably add one entry; returns it with the new ``checkpoint`` and any ``recovered`` residue.

        With DEFER_HEAD the entry reaches the disk but head.json is left for the next append of
        this object to update: one sync instead of two, for a write-ahead intent that an outcome
        follows within the same run. Until then, and for good if the run dies, the entry is crash
        residue that readers count and the next writer adopts.

        Raises ValueError for arguments that cannot form a valid entry, LedgerError when the
        ledger cannot be written or is damaged in a way no crash explains.
        """
        if not isinstance(action, str) or not action:
            raise ValueError("action must be a non-empty string")
        if not isinstance(changes, (list, tuple, dict)):
            raise ValueError("changes must be a list or a dict")
        if state_sha256 is not None and not (isinstance(state_sha256, str) and _HEX_DIGEST.fullmatch(state_sha256)):
            raise ValueError("state_sha256 must be None or a lowercase hex SHA-256")
        if actor is None:
            actor = _current_user()
        elif not isinstance(actor, str):
            raise ValueError("actor must be a string")
        self._ensure_directory()
        with self._locked(exclusive=True):
            head, recovered = self._prepare_for_write()
            entry = {"action": action, "actor": actor, "changes": changes, "host": self.host,
                     "prev_root": head.root.hex(), "seq": head.size, "state_sha256": state_sha256,
                     "time": _utc_now()}
            line = canonical_json(entry)
            # Re-read what will be stored: the caller gets exactly the stored entry (tuples become
            # lists and so on), and an entry the verifier would reject is never written.
            stored, problems = _check_line(line, head.size, head.root.hex())
            if problems:
                raise ValueError("the entry would not verify: %s" % problems[0][1])
            self._append_line(head.length, line + b"\n")
            frontier = head.frontier.copy()
            frontier.append(leaf_hash(line))
            new_head = _Head.from_frontier(head.origin, head.length + len(line) + 1, frontier)
            if defer_head:
                self._known_head = (_stat_identity(self.head_path), new_head.length, new_head)
            else:
                self._write_head(new_head)
        stored["checkpoint"] = new_head.checkpoint()
        stored["recovered"] = recovered
        return stored

    def _exists(self):
        """Whether the ledger directory exists; os.path.isdir would mistake "permission denied" for "no"."""
        try:
            mode = os.stat(self.directory).st_mode
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _oserror("look up", self.directory, exc) from None
        if not stat.S_ISDIR(mode):
            raise LedgerError("%s exists but is not a directory" % self.directory)
        return True

    def _ledger_size(self):
        try:
            return os.path.getsize(self.ledger_path)
        except FileNotFoundError:
            return 0

    def _ensure_directory(self):
        if self._exists():
            return
        try:
            make_directories(os.path.dirname(self.directory), 0o755)
            make_directories(self.directory, 0o700)
        except OSError as exc:
            raise _oserror("create the ledger directory", self.directory, exc) from None

    def _prepare_for_write(self):
        """Under the exclusive lock: load or create the head and recover crash residue."""
        try:
            identity = _stat_identity(self.head_path)
            known = self._known_head
            if known is not None and known[0] == identity and known[1] == self._ledger_size():
                return known[2], []
            head = _Head.parse(_read_file(self.head_path))
            if head.frontier.root() != head.root:
                raise LedgerError("head.json's root does not match its frontier; refusing to append: " + INVESTIGATE)
        except FileNotFoundError:
            return self._initialise(), []
        except ValueError as exc:
            raise LedgerError("%s; refusing to append: %s" % (exc, INVESTIGATE)) from None
        except OSError as exc:
            raise _oserror("read", self.head_path, exc) from None
        tail = self._read_tail(head)
        if not tail:
            return head, []
        residue = _Residue(tail, head.frontier)
        if residue.foreign:
            raise LedgerError("ledger.jsonl holds %d bytes after the %d entries head.json covers that no interrupted "
                              "append explains; refusing to append: %s" % (len(tail), head.size, INVESTIGATE))
        if residue.torn:
            try:
                fd = os.open(self.ledger_path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, head.length + len(tail) - residue.torn)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _oserror("recover", self.ledger_path, exc) from None
        if residue.lines:
            head = _Head.from_frontier(head.origin, head.length + len(tail) - residue.torn, residue.frontier)
            self._write_head(head)
        return head, residue.items()

    def _read_tail(self, head):
        """Bytes of ledger.jsonl after the end head.json records, checking that the end is sane."""
        try:
            with open(self.ledger_path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < head.length:
                    raise LedgerError("ledger.jsonl is %d bytes but head.json covers %d: acknowledged entries were "
                                      "removed; %s" % (size, head.length, INVESTIGATE))
                if head.length:
                    handle.seek(head.length - 1)
                    if handle.read(1) != b"\n":
                        raise LedgerError("the end head.json records is not at a line boundary of ledger.jsonl: "
                                          "the file was modified; " + INVESTIGATE)
                return handle.read()
        except FileNotFoundError:
            raise LedgerError("ledger.jsonl is missing although head.json records %d entries; %s"
                              % (head.size, INVESTIGATE)) from None
        except OSError as exc:
            raise _oserror("read", self.ledger_path, exc) from None

    def _initialise(self):
        try:
            if os.path.getsize(self.ledger_path):
                raise LedgerError("head.json is missing although ledger.jsonl holds data; refusing to start a new "
                                  "ledger over it: " + INVESTIGATE)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _oserror("read", self.ledger_path, exc) from None
        try:
            # Creating the ledger makes its directory private, also when another op-dbus file (the
            # state snapshot, say) created the directory first with the umask's permissions.
            os.chmod(self.directory, 0o700)
            fd = os.open(self.ledger_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _oserror("create", self.ledger_path, exc) from None
        head = _Head.from_frontier("opdbus:%s:%s" % (self.host, os.urandom(16).hex()), 0, Frontier())
        self._write_head(head)
        # Appends need not sync the directory (see _write_head), but the files must exist.
        try:
            fsync_directory(self.directory)
        except OSError as exc:
            raise _oserror("sync", self.directory, exc) from None
        return head

    def _append_line(self, offset, line):
        try:
            fd = os.open(self.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise _oserror("open", self.ledger_path, exc) from None
        try:
            try:
                _write_all(fd, line)
                os.fdatasync(fd)
            except OSError as exc:
                # Leave no partial line behind an error we report (a full disk, typically).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, offset)
                raise _oserror("append to", self.ledger_path, exc) from None
        finally:
            os.close(fd)

    def _write_head(self, head):
        """Replace head.json atomically: temp file, fdatasync, rename.

        The directory is not synced: the entry an append acknowledges is already durable in
        ledger.jsonl, and if a power failure loses the rename, the next writer adopts the
        complete entries head.json does not cover, exactly as after a crash before the rename.
        The temp file is synced before the rename so that head.json is never the new name of
        contents that did not reach the disk. That saves a third of an append's syncs.
        """
        tmp = self.head_path + ".tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, canonical_json(head.to_json()) + b"\n")
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
            self._known_head = (_stat_identity(self.head_path), head.length, head)
        except OSError as exc:
            raise _oserror("write", self.head_path, exc) from None


class RunLock:
    """One op-dbus run at a time per ledger, held from planning through the run's last append.

    Separate from the ledger's own lock, which an append holds for a millisecond and readers
    share: a run holds this one for as long as its jobs take, and readers never wait for it. The
    holder writes who it is into the file, so that a waiting run can say what it waits for.
    """

    def __init__(self, ledger, purpose, timeout=DEFAULT_RUN_LOCK_TIMEOUT):
        self.ledger = ledger
        self.path = os.path.join(ledger.directory, RUN_LOCK_FILE)
        self.purpose = purpose
        self.timeout = timeout
        self.waited = 0.0
        self.waited_for = None
        self._fd = None

    def acquire(self, create=True):
        """Take the lock. Without CREATE (check mode) a ledger directory that does not exist is
        not created; then there is nothing to lock and this returns False."""
        if create:
            self.ledger._ensure_directory()
        elif not self.ledger._exists():
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _oserror("open the run lock", self.path, exc) from None
        started = time.monotonic()
        if not flock_within(fd, True, 0):
            self.waited_for = _read_holder(fd)
            if not flock_within(fd, True, self.timeout, max_delay=0.05):
                os.close(fd)
                raise LedgerError("timed out after %gs waiting for the op-dbus run lock %s, held by %s. Let that "
                                  "run finish, or raise the lock timeout" % (self.timeout, self.path, self.waited_for))
            self.waited = time.monotonic() - started
        try:
            os.ftruncate(fd, 0)
            _write_all(fd, ("pid %d (%s) since %s" % (os.getpid(), self.purpose, _utc_now())).encode("utf-8"))
        except OSError as exc:
            os.close(fd)
            raise _oserror("write", self.path, exc) from None
        self._fd = fd
        return True

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd):
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another op-dbus run"


def select_entries(entries, since=None, limit=None):
    """ENTRIES (in seq order) with seq >= SINCE (negative counts from the end), at most LIMIT of them."""
    start = 0 if since is None else (max(len(entries) + since, 0) if since < 0 else since)
    stop = len(entries) if limit is None else start + max(limit, 0)
    return entries[start:stop]


def _stat_identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _current_user():
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _root_hex(leaves, size):
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
    check = _check_line
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
        theirs = _Findings()
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
            _write_all(write_fd, json.dumps(work()).encode("utf-8"))
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


def _parse_anchor(anchor):
    if not isinstance(anchor, dict):
        raise ValueError("the anchor must be a dict with origin, size and root")
    origin, size, root = anchor.get("origin"), anchor.get("size"), anchor.get("root")
    if origin is not None and (not isinstance(origin, str) or not origin):
        raise ValueError("the anchor's origin must be a non-empty string")
    if not _is_int(size) or size < 0:
        raise ValueError("the anchor's size must be a non-negative integer")
    if not isinstance(root, str) or not _HEX_DIGEST.fullmatch(root):
        raise ValueError("the anchor's root must be a lowercase hex SHA-256")
    if origin is None and size:
        raise ValueError("an anchor without an origin can only be the empty checkpoint (size 0)")
    return origin, size, bytes.fromhex(root)


def _verify_snapshot(snapshot, anchor):
    findings = _Findings()
    recoverable = []
    frontier = Frontier()
    leaves = []
    head = snapshot.head
    if snapshot.head_error is not None:
        findings.add(None, "bad_head", snapshot.head_error)
    elif snapshot.exists and head is None and snapshot.data:
        findings.add(None, "bad_head", "head.json is missing although ledger.jsonl holds %d bytes"
                     % len(snapshot.data))

    layout = _Layout(snapshot)
    _scan(layout.lines, frontier, leaves, findings)
    if head is not None:
        _check_head(head, layout, frontier, findings)
    if layout.tail:
        residue = _Residue(layout.tail, frontier)
        if residue.foreign:
            extra = _split_lines(layout.tail)
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
        origin, size, root = _parse_anchor(anchor)
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
