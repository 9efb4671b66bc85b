# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger's format: canonical JSON entries, the checks every line must pass, and head.json.

The file format, the crash semantics and the threat model are described in docs/ledger.md;
the comments here explain only why the code is shaped the way it is.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError, describe_os_error
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import EMPTY_ROOT, Frontier


# The action of the entry a run appends before its first change (see RecordedRun).
INTENT_ACTION = "intent"

# What to do about damage, in every message that finds some.
INVESTIGATE = "verify the ledger with the opdbus.fleet.opdbus_ledger_info module, which lists every problem, and investigate"
INTERRUPTED_ACTION = "interrupted"
FORMAT_VERSION = 1
ENTRY_FIELDS = ("action", "actor", "changes", "host", "prev_root", "seq", "state_sha256", "time")
_ENTRY_KEYS = frozenset(ENTRY_FIELDS)
_HEAD_KEYS = frozenset(("version", "origin", "size", "length", "root", "frontier"))
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
EMPTY_ROOT_HEX = EMPTY_ROOT.hex()


class LedgerError(OpdbusError):
    """An operational failure (permissions, lock timeout, damaged files); the message says what to do."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# Parsed JSON cannot contain reference cycles, so the verifier's encoder skips the cycle
# bookkeeping; it is otherwise identical to _CANONICAL and measurably faster.
_CANONICAL_ACYCLIC = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                      allow_nan=False, check_circular=False)


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def canonical_json(obj):
    """The one canonical encoding: sorted keys, no whitespace, UTF-8 without escapes, no NaN.

    Raises TypeError for values JSON cannot represent and ValueError for NaN, infinities and
    strings that are not valid Unicode.
    """
    return _CANONICAL.encode(obj).encode("utf-8")


def utc_now():
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _valid_time(value):
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:-1])
    except ValueError:
        return False
    return True


def is_int(value):
    # JSON true and false arrive as bools, which Python also counts as ints.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value):
    return is_int(value) and value >= 0


def check_line(raw, position, prev_root):
    """Parse one stored line (without its newline) and check it as the entry at ``position``.

    ``prev_root`` is the hex root of the ledger's first ``position`` lines. Returns
    ``(entry, problems)``: ``entry`` is the parsed object or None when the line is not a JSON
    object, ``problems`` is None for a good entry or a list of ``(kind, detail)``.
    """
    try:
        text = raw.decode("utf-8")
        obj, end = DECODER.raw_decode(text)
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
            and is_int(obj["seq"]) and obj["seq"] == position and obj["prev_root"] == prev_root
            and isinstance(obj["host"], str) and obj["host"] and isinstance(obj["action"], str) and obj["action"]
            and isinstance(obj["actor"], str) and isinstance(obj["changes"], (list, dict))
            and (obj["state_sha256"] is None or isinstance(obj["state_sha256"], str)
                 and HEX_DIGEST.fullmatch(obj["state_sha256"]))
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
    if is_int(seq) and seq != position:
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
    if not is_int(obj["seq"]) or obj["seq"] < 0:
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
                                                and HEX_DIGEST.fullmatch(obj["state_sha256"])):
        errors.append("state_sha256 is neither null nor a lowercase hex SHA-256")
    if not isinstance(obj["prev_root"], str) or not HEX_DIGEST.fullmatch(obj["prev_root"]):
        errors.append("prev_root is not a lowercase hex SHA-256")
    return errors


class Head:
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
            obj = DECODER.decode(raw.decode("utf-8"))
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
        if not isinstance(obj["root"], str) or not HEX_DIGEST.fullmatch(obj["root"]):
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


def split_lines(chunk):
    lines = chunk.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def ledger_os_error(action, path, exc):
    return LedgerError("cannot %s %s: %s" % (action, path, describe_os_error(exc)))


def select_entries(entries, since=None, limit=None):
    """ENTRIES (in seq order) with seq >= SINCE (negative counts from the end), at most LIMIT of them."""
    start = 0 if since is None else (max(len(entries) + since, 0) if since < 0 else since)
    stop = len(entries) if limit is None else start + max(limit, 0)
    return entries[start:stop]
