# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hypothesis strategies for the fuzz test: bad inputs for every module of the collection.

A case is a plausible input with one or more specific defects, so that most cases get past
argument-spec validation into the module's own code: a document with one bad field among good
ones, a ledger with one flipped byte, a retention policy with one negative count. Each case names
its ``kind`` (what is wrong with it) for the counts the harness prints; some cases of each module
have no defect at all (kind ``valid``), so that the accepted path is exercised too.

Cases are dicts ``{module, kind, params, check_mode, diff, setup, units, btrfs_default}``; ``setup``
tells tests/fuzz/runner.py what to build in the case directory (``@CASE@`` in a path) before the
module runs. Nothing here names a real system unit in a way that could change it: documents only
declare the test units (``fuzz-*``), units that are not installed, and names that are invalid.

Strategies are built once, at import: building one inside a draw costs Hypothesis more than the
module run it feeds. Choices from fixed lists go through ``one()`` (see ``_Choices``); free-form
values (text, bytes, integers, nested junk) are Hypothesis draws, with its edge-case heuristics.
"""

from __future__ import annotations

import base64
import json

from hypothesis import strategies as st

CASE = "@CASE@"
TREES = "@TREES@"  # where the runner keeps the sysfs fixture trees
LEDGER = f"{CASE}/ledger"
BTRFS = "/mnt/btrfs"

# The test units the runner installs (runner.UNIT_FILES) and what each exercises.
UNITS = {
    "fuzz-a.service": "running, enabled",
    "fuzz-b.service": "stopped, disabled",
    "fuzz-c.service": "running, disabled",
    "fuzz-static.service": "no [Install]: cannot be enabled or disabled",
    "fuzz-cond.service": "ConditionPathExists= unmet: skipped when started",
    "fuzz-assert.service": "AssertPathExists= fails: a start fails",
    "fuzz-bad.service": "no ExecStart=: load state bad-setting",
    "fuzz-fail.service": "ExecStart=/bin/false: a start fails at run time",
    "fuzz-masked.service": "masked",
    "fuzz-rtmask.service": "masked at run time (/run/systemd/system)",
    "fuzz-own.service": "its file is in /etc/systemd/system: cannot be masked",
    "fuzz-tmpl@one.service": "an instance of a template",
    "fuzz-sock.socket": "a socket (placeable by opdbus_numa)",
    "fuzz-sock.service": "the socket's service",
    "fuzz-tick.timer": "a timer (not placeable)",
    "fuzz-tick.service": "the timer's oneshot, no [Install]",
}
PRESENT = tuple(sorted(UNITS))
ABSENT = ("fuzz-absent.service", "cups.service", "fuzz-nope.socket", "fuzz-none@x.service", "fuzz-gone.timer",
          "bluetooth.service", "fuzz-absent.mount")
BAD_NAMES = ("", "fuzz-a", "fuzz-a.servic", "fuzz a.service", "../fuzz-a.service", "fuzz-a.service/",
             "/etc/systemd/system/fuzz-a.service", "fuzz-tmpl@.service", "@.service", ".service",
             "f" * 260 + ".service", "fuzz-a.service\n", "fuzz-\u00e4.service", "fuzz-a.SERVICE", "fuzz-a.service.d",
             "fuzz-*.service", "fuzz-a.service fuzz-b.service", "fuzz-a.service\x00", "fuzz%i.service", "-",
             "fuzz-a.conf", "fuzz-a.service.service")
FIELDS = (("active_state", ("active", "inactive")), ("enabled", (True, False)), ("masked", (True, False)))
BAD_FIELD_VALUES = ("running", "started", "Active", "ACTIVE", "stopped", "enabled", "yes", "no", "true", "false",
                    "", 1, 0, -1, 1.5, None, [], {}, ["active"], {"active": True}, float("nan"), float("inf"))
FIELD_TYPOS = ("enabld", "active", "state", "Enabled", "mask", "masked ", "running", "wanted_by", "sub_state",
               "load_state", "unit_file_state", "")
OPTION_TYPOS = ("force", "stat", "source", "ledger", "path", "unit", "check", "dry_run", "timeout", "State")

# Per module: the options the module had when these strategies were written. Options a module has
# gained since (the runner reads each module's argument spec) get values of any type.
KNOWN_OPTIONS = {
    "opdbus_state": {"state", "src", "scope", "ledger_path", "lock_timeout", "state_file", "job_timeout"},
    "opdbus_state_info": {"state", "src", "scope", "units", "query"},
    "opdbus_ledger_info": {"path", "since", "limit", "anchor", "fail_on_invalid", "query"},
    "opdbus_snapshot": {"state", "id", "label", "units", "retention", "btrfs_subvolumes", "btrfs_snapshot_dir",
                        "scope", "ledger_path", "lock_timeout", "state_file", "job_timeout"},
    "opdbus_numa": {"units", "state", "restart", "dropin_name", "sysfs_root", "job_timeout", "ledger_path",
                    "lock_timeout"},
    "opdbus_numa_info": {"sysfs_root", "query"},
    "btrfs_subvolume": {"path", "state", "snapshot_source", "read_only", "compression", "default", "recursive",
                        "ledger_path", "lock_timeout"},
    "btrfs_info": {"path"},
}
# Options naming files the module writes; left out (None, "") they mean the system's own files.
PATH_OPTIONS = {"ledger_path", "state_file"}
READ_ONLY_MODULES = {"opdbus_state_info", "opdbus_ledger_info", "opdbus_numa_info", "btrfs_info"}

# ------------------------------------------------------------------------------------------ building blocks


class _Choices:
    """The random source of fixed-list choices: one Random per case, drawn from Hypothesis (so a seed
    reproduces a run). Hypothesis draws integers towards their minimum (zero in about 40% of draws),
    which would make the first entry of every list the usual choice."""

    random = None


RANDOMS = st.randoms(use_true_random=False)


def between(_draw, low, high):
    """An integer in [LOW, HIGH], uniformly."""
    return _Choices.random.randint(low, high)


def one(draw, options):
    return options[between(draw, 0, len(options) - 1)]


def chance(draw, one_in):
    """True once in ONE_IN draws."""
    return between(draw, 1, one_in) == 1


def several(draw, options, low, high, unique=False):
    picked = [one(draw, options) for _index in range(between(draw, low, high))]
    return list(dict.fromkeys(picked)) if unique else picked


TEXT = st.text(max_size=12)
SHORT_TEXT = st.text(min_size=1, max_size=10)
# No infinities: ansible-core's own check_type_int raises OverflowError on one (any int option), which
# no module can prevent. Documents still get them (BAD_FIELD_VALUES), where the collection must cope.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_infinity=False), TEXT)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=6)
BINARY = st.binary(max_size=48)
POSITION = st.integers(0, 10 ** 6)
ANY_INT = st.integers()
SPECIAL_INTS = (0, -1, 1, 2, 2 ** 31, 2 ** 63, -(2 ** 63), 10 ** 30, -(10 ** 30))
INT_STRINGS = ("5", "abc", "1.5", "", " 3", "0x10", "1e3", "-0", "nan")  # not "inf": see SCALARS
NOT_INTS = (1.5, -0.5, float("nan"), True, False, None, [1], {"a": 1})
NOT_BOOLS = ("yes", "no", "maybe", "", "TRUE", "on", "2", 2, -1, 0.0, None, [], {})


def junk(draw):
    return draw(JUNK)


def bad_int(draw):
    """A value for an int option: out of range, of the wrong type, or a string Ansible may convert."""
    return one(draw, (lambda: one(draw, SPECIAL_INTS), lambda: between(draw, -5, 5), lambda: one(draw, INT_STRINGS),
                      lambda: one(draw, NOT_INTS), lambda: draw(ANY_INT)))()


def bad_bool(draw):
    return one(draw, NOT_BOOLS) if between(draw, 0, 2) else junk(draw)


def b64(data):
    return base64.b64encode(data).decode()


def files_b64(data):
    return {"b64": b64(data)}


def document(units):
    return {"version": 1, "plugins": {"systemd": {"units": units}}}


def unit_fields(draw):
    """A valid declaration: a subset of the fields with allowed values (a masked unit neither active nor enabled)."""
    fields = {field: one(draw, values) for field, values in FIELDS if between(draw, 0, 1)}
    if fields.get("masked") is True:
        if fields.get("active_state") == "active":
            fields["active_state"] = "inactive"
        if fields.get("enabled") is True:
            fields["enabled"] = False
    return fields


ABSENT_FIELDS = ({"active_state": "inactive"}, {"enabled": False}, {"active_state": "inactive", "enabled": False},
                 {"masked": True}, {"masked": True, "active_state": "inactive", "enabled": False}, {})


def absent_fields(draw):
    """What may be declared of a unit that is not installed without error: stopped, disabled, masked."""
    return dict(one(draw, ABSENT_FIELDS))


def valid_units(draw, low=1, high=5):
    units = {name: unit_fields(draw) for name in several(draw, PRESENT, low, high, unique=True)}
    if chance(draw, 4):
        units[one(draw, ABSENT)] = absent_fields(draw)
    return units


# ------------------------------------------------------------------------------------------ documents

DOC_DEFECTS = ("version", "top_unknown", "plugins_type", "plugin_unknown", "systemd_type", "systemd_unknown",
               "units_type", "unit_name", "unit_value", "field_unknown", "field_value", "conflict",
               "absent_required", "systemd_refuses", "big", "deep", "not_a_mapping")
VERSIONS = (0, 2, "1", "v1", True, None, -1, 10 ** 20, 1.5, [], {}, "delete")
TOP_KEYS = ("Version", "plugin", "units", "systemd", "metadata")
PLUGINS_VALUES = ([], "systemd", None, 1, ["systemd"], True)
PLUGIN_NAMES = ("network", "packages", "login1", "Systemd", "docker")
SYSTEMD_VALUES = ([], "units", None, 0, [{"units": {}}])
SYSTEMD_KEYS = ("unit", "services", "timers", "Units")
UNITS_VALUES = (["fuzz-a.service"], "fuzz-a.service", None, 3, [{"fuzz-a.service": {"active_state": "active"}}])
UNIT_VALUES = (None, "active", ["active_state", "active"], 1, True, "", [{"active_state": "active"}])
TYPO_VALUES = ("active", True, False, "x", None)
CONFLICTS = ({"masked": True, "active_state": "active"}, {"masked": True, "enabled": True},
             {"masked": True, "active_state": "active", "enabled": True})
ABSENT_REQUIRED = ({"active_state": "active"}, {"enabled": True}, {"active_state": "active", "masked": False})
SYSTEMD_REFUSES = (
    ("fuzz-own.service", {"masked": True}),
    ("fuzz-own.service", {"masked": True, "active_state": "inactive"}),
    ("fuzz-static.service", {"enabled": False}),
    ("fuzz-static.service", {"enabled": True}),
    ("fuzz-tick.service", {"enabled": True}),
    ("fuzz-bad.service", {"active_state": "active"}),
    ("fuzz-assert.service", {"active_state": "active"}),
    ("fuzz-masked.service", {"active_state": "active"}),
    ("fuzz-masked.service", {"enabled": True}),
    ("fuzz-tmpl@one.service", {"masked": True, "active_state": "inactive"}),
    ("fuzz-cond.service", {"active_state": "active"}),
    ("fuzz-rtmask.service", {"masked": False}),
    ("fuzz-rtmask.service", {"masked": False, "active_state": "active"}),
)
BIG_TAIL = ({"active_state": "active"}, {"enabld": True}, {"masked": "yes"})
NOT_MAPPINGS = ([], "inactive", 0)


def bad_document(draw, defects=None):
    """A valid document given one or more specific defects."""
    doc = document(valid_units(draw))
    for defect in defects or several(draw, DOC_DEFECTS, 1, 2, unique=True):
        _apply_doc_defect(draw, doc, defect)
    return doc


def _units_of(doc):
    try:
        units = doc["plugins"]["systemd"]["units"]
    except (KeyError, TypeError):
        return None
    return units if isinstance(units, dict) else None


def _systemd_of(doc):
    plugins = doc.get("plugins")
    return plugins.get("systemd") if isinstance(plugins, dict) and isinstance(plugins.get("systemd"), dict) else None


def _apply_doc_defect(draw, doc, defect):
    units = _units_of(doc)
    plugins = doc.get("plugins") if isinstance(doc.get("plugins"), dict) else None
    systemd = _systemd_of(doc)
    if defect == "version":
        value = one(draw, VERSIONS)
        if value == "delete":
            doc.pop("version", None)
        else:
            doc["version"] = value
    elif defect == "top_unknown":
        doc[one(draw, TOP_KEYS) if between(draw, 0, 1) else draw(SHORT_TEXT)] = junk(draw)
    elif defect == "plugins_type":
        doc["plugins"] = one(draw, PLUGINS_VALUES)
    elif defect == "plugin_unknown" and plugins is not None:
        plugins[one(draw, PLUGIN_NAMES)] = junk(draw)
    elif defect == "systemd_type" and plugins is not None:
        plugins["systemd"] = one(draw, SYSTEMD_VALUES)
    elif defect == "systemd_unknown" and systemd is not None:
        systemd[one(draw, SYSTEMD_KEYS)] = junk(draw)
    elif defect == "units_type" and systemd is not None:
        systemd["units"] = one(draw, UNITS_VALUES)
    elif units is not None:
        _apply_unit_defect(draw, units, defect)


def _apply_unit_defect(draw, units, defect):
    if defect == "unit_name":
        name = one(draw, BAD_NAMES) if between(draw, 0, 2) else "fuzz-" + draw(TEXT)
        units[name] = unit_fields(draw)
    elif defect == "unit_value":
        units[one(draw, PRESENT)] = one(draw, UNIT_VALUES)
    elif defect == "field_unknown":
        name = one(draw, PRESENT)
        if not isinstance(units.get(name), dict):
            units[name] = {}
        units[name][one(draw, FIELD_TYPOS)] = one(draw, TYPO_VALUES)
    elif defect == "field_value":
        name = one(draw, PRESENT + ABSENT)
        units[name] = unit_fields(draw)
        units[name][one(draw, FIELDS)[0]] = one(draw, BAD_FIELD_VALUES)
    elif defect == "conflict":
        units[one(draw, PRESENT)] = dict(one(draw, CONFLICTS))
    elif defect == "absent_required":
        units[one(draw, ABSENT)] = dict(one(draw, ABSENT_REQUIRED))
    elif defect == "systemd_refuses":
        name, fields = one(draw, SYSTEMD_REFUSES)
        units[name] = dict(fields)
    elif defect == "big":
        for index in range(between(draw, 10, 60)):
            units[f"fuzz-absent-{index}.service"] = {"active_state": "inactive"}
        units[one(draw, BAD_NAMES + ABSENT)] = dict(one(draw, BIG_TAIL))
    elif defect == "deep":
        value = "x"
        for _level in range(between(draw, 20, 150)):
            value = [value] if between(draw, 0, 1) else {"k": value}
        units[one(draw, PRESENT)] = {"active_state": value}
    elif defect == "not_a_mapping":
        units.clear()
        units["fuzz-a.service"] = one(draw, NOT_MAPPINGS)


# ------------------------------------------------------------------------------------------ files and paths

SRC_VARIANTS = ("json", "json", "invalid_json", "not_utf8", "empty", "array", "directory", "missing", "symlink_loop",
                "bom", "huge_number", "relative", "passwd", "duplicate_keys", "trailing", "proc")


def src_file(draw, doc):
    """The ``src`` option and the file behind it: the document, or a file that is not a document."""
    variant = one(draw, SRC_VARIANTS)
    path = f"{CASE}/doc.json"
    text = json.dumps(doc)
    contents = {
        "json": {"text": text}, "relative": {"text": text},
        "invalid_json": {"text": text[:between(draw, 0, max(len(text) - 1, 0))]},
        "not_utf8": files_b64(text.encode()[:10] + b"\xff\xfe\x80" + text.encode()[10:]),
        "empty": {"text": ""}, "array": {"text": json.dumps([doc])}, "directory": {"dir": True},
        "symlink_loop": {"symlink": f"{CASE}/doc.json"}, "bom": files_b64(b"\xef\xbb\xbf" + text.encode()),
        "huge_number": {"text": '{"version": 1e999, "plugins": {}}'},
        "duplicate_keys": {"text": '{"version": 1, "version": 2, "plugins": {"systemd": {"units": {}}}}'},
        "trailing": {"text": text + "\n{}"},
    }
    files = {"doc.json": contents[variant]} if variant in contents else {}
    path = {"relative": "doc.json", "passwd": "/etc/passwd", "proc": "/proc/self/status"}.get(variant, path)
    return path, files


def odd_paths(name):
    return (f"{CASE}/existing-file", f"{CASE}/existing-file/{name}", "/proc/opdbus-fuzz", "/dev/null", f"{CASE}/{name}\n",
            f"{CASE}/l\u00e9dger-{name}", f"rel/{name}", f"{CASE}/./{name}/", f"{CASE}/{'d' * 300}",
            f"{CASE}/sub/../{name}")


def case_path(draw, name):
    """A path option: usually in the case directory; sometimes where no file can be, or of the wrong kind."""
    return f"{CASE}/{name}" if between(draw, 0, 2) else one(draw, odd_paths(name))


# ------------------------------------------------------------------------------------------ ledgers

MUTABLE_FILES = ("ledger.jsonl", "ledger.jsonl", "ledger.jsonl", "head.json", "head.json", "state/current.json")
APPENDED = (b"\n", b"{}\n", b'{"action":"apply"}\n', b"\x00" * 8, b'{"seq":', b"garbage without newline")
HEAD_KEYS = ("version", "origin", "size", "length", "root", "frontier", "extra")
HEAD_VALUES = ("0" * 64, "f" * 64, "F" * 64, "", None, [], {})
LINK_TARGETS = ("/etc/passwd", f"{CASE}/canary", "/dev/null", "nonexistent", ".")
BYTE_OPS = ("flip", "truncate", "append", "delete_line", "dup_line", "swap_lines", "head_set", "remove", "replace",
            "make_dir", "symlink")


def byte_mutation(draw):
    """One change of the ledger's bytes: what a bad disk, a careless editor or an attacker does."""
    target = one(draw, MUTABLE_FILES)
    op = one(draw, BYTE_OPS)
    if op == "flip":
        return [op, target, draw(POSITION), between(draw, 1, 255)]
    if op == "truncate":
        return [op, target, draw(POSITION)]
    if op == "append":
        return [op, target, b64(one(draw, APPENDED) if between(draw, 0, 1) else draw(BINARY))]
    if op in ("delete_line",):
        return [op, draw(POSITION)]
    if op in ("dup_line", "swap_lines"):
        return [op, draw(POSITION), draw(POSITION)]
    if op == "head_set":
        value = one(draw, (lambda: between(draw, -3, 40), lambda: one(draw, HEAD_VALUES), lambda: junk(draw)))()
        return [op, "head.json", one(draw, HEAD_KEYS), value]
    if op == "replace":
        return [op, target, b64(draw(BINARY))]
    if op == "symlink":
        return [op, target, one(draw, LINK_TARGETS)]
    return [op, target]


SNAPSHOT_PATHS = (f"{BTRFS}/@data", f"{BTRFS}", "/", "/etc", f"{BTRFS}/@snapshots/../@data", f"{BTRFS}/@comp",
                  "relative/path", "", f"{BTRFS}/@data/inner", f"{BTRFS}/@snapshots", f"{CASE}/canary")
HOSTILE_DIGESTS = ("../../victim", "../../../victim", "0" * 64, "A" * 64, "", "../" * 6 + "tmp/opdbus-fuzz-canary",
                   "/tmp/opdbus-fuzz-canary", "0" * 63, "g" * 64)
SOURCES = (f"{BTRFS}/@data", "/")
ACTIONS = ("snapshot", "prune", "delete_snapshot", "rollback", "intent", "interrupted", "apply", "", "Snapshot", 5, None)
TIMES = ("2020-13-45T99:99:99.000000Z", "", None, "yesterday", "9999-12-31T23:59:59.999999Z",
         "0001-01-01T00:00:00.000000Z", "2024-02-30T00:00:00.000000Z", 0)
SEQS = ("0", None, 1.5, True)
PREV_ROOTS = ("0" * 64, "", None, "x")
SMALL_LISTS = ([], "x", None, 5, [{"unit": "fuzz-a.service"}])
INTERESTING_ACTIONS = ("snapshot", "prune", "delete_snapshot", "rollback", "intent", "apply")


def btrfs_records(draw):
    return [{"source": one(draw, SOURCES), "snapshot": one(draw, SNAPSHOT_PATHS)} for _index in range(between(draw, 1, 2))]


def id_values(draw):
    return [one(draw, (lambda: between(draw, -2, 30), lambda: draw(TEXT), lambda: None))() for _index in
            range(between(draw, 0, 3))]


EDITS = (
    (["state_sha256"], lambda draw: one(draw, HOSTILE_DIGESTS + (None, 5))),
    (["changes", "btrfs"], lambda draw: btrfs_records(draw) if between(draw, 0, 1) else junk(draw)),
    (["changes", "removed"], lambda draw: id_values(draw) if between(draw, 0, 1) else junk(draw)),
    (["changes", "blobs"], lambda draw: several(draw, HOSTILE_DIGESTS, 0, 2) if between(draw, 0, 1) else junk(draw)),
    (["changes", "label"], junk),
    (["changes", "units"], junk),
    (["changes"], lambda draw: one(draw, SMALL_LISTS)),
    (["changes", "planned"], junk),
    (["changes", "intent"], lambda draw: between(draw, -1, 40) if between(draw, 0, 1) else junk(draw)),
    (["changes", "policy"], junk),
    (["action"], lambda draw: one(draw, ACTIONS)),
    (["seq"], lambda draw: between(draw, -2, 40) if between(draw, 0, 1) else one(draw, SEQS)),
    (["time"], lambda draw: one(draw, TIMES)),
    (["host"], junk),
    (["actor"], junk),
    (["prev_root"], lambda draw: one(draw, PREV_ROOTS)),
    (["extra"], junk),
    (["changes", "units", 0, "unit"], lambda draw: one(draw, BAD_NAMES[:6] + ("ssh.service",))),
)


def entry_edit(draw, seed):
    """A change to one field of one entry, the line re-serialised (its hashes then no longer match)."""
    interesting = [index for index, action in enumerate(seed["actions"]) if action in INTERESTING_ACTIONS]
    index = one(draw, interesting) if interesting and between(draw, 0, 1) else between(draw, 0, max(seed["lines"], 1) - 1)
    path, value = one(draw, EDITS)
    if chance(draw, 10):
        return ["edit_entry", index, path, {"$delete": True}]
    return ["edit_entry", index, path, value(draw)]


HOSTILE_ACTIONS = ("snapshot", "snapshot", "prune", "delete_snapshot", "intent", "rollback", "apply")
INTENT_FOR = ("apply", "rollback", "prune", "", None)
PLANNED_ACTIONS = ("start", "rm -rf", "")
APPLY_KEYS = ("units", "files", "snapshot", "snapshot_sha256", "intent", "failed")


def hostile_entry(draw, seed):
    """An entry a well-formed but hostile ledger could hold: destructive paths in otherwise valid entries."""
    digests = tuple(name.split("/")[-1].split(".")[0] for name in seed["blobs"]) or ("0" * 64,)
    action = one(draw, HOSTILE_ACTIONS)
    digest = None
    if action == "snapshot":
        digest = one(draw, digests + ("0" * 64, "e" * 64))
        changes = {"units": between(draw, -1, 5) if between(draw, 0, 1) else junk(draw),
                   "label": one(draw, (None, "first", "x")),
                   "btrfs": btrfs_records(draw) if between(draw, 0, 2) else junk(draw)}
    elif action in ("prune", "delete_snapshot"):
        changes = {"removed": id_values(draw) if between(draw, 0, 1) else junk(draw),
                   "blobs": several(draw, HOSTILE_DIGESTS, 0, 2),
                   "btrfs": several(draw, SNAPSHOT_PATHS, 0, 2)}
    elif action == "intent":
        changes = {"for": one(draw, INTENT_FOR),
                   "planned": [{"unit": one(draw, PRESENT + BAD_NAMES[:3]), "action": one(draw, PLANNED_ACTIONS)}
                               for _index in range(between(draw, 0, 3))]}
    else:
        changes = {one(draw, APPLY_KEYS): junk(draw) for _index in range(between(draw, 0, 3))}
        digest = one(draw, (None,) + digests)
    return ["add_entry", {"action": action, "changes": changes, "state_sha256": digest,
                          "host": "node1", "actor": "root", "time": "2026-01-01T00:00:00.000000Z"}]


def _zstd(data):
    import zstandard

    return b64(zstandard.ZstdCompressor().compress(data))


_OTHER_DOCUMENT = json.dumps(document({"fuzz-b.service": {"active_state": "inactive"}}), sort_keys=True,
                             separators=(",", ":")).encode()
BLOB_CONTENTS = (_zstd(_OTHER_DOCUMENT), _zstd(b"not json"), _zstd(b"\xff\xfe"), _zstd(b"[1, 2]"), _zstd(b""),
                 _zstd(b'{"version": 2}'), b64(b"plain text"))
BLOB_OPS = ("flip", "truncate", "remove", "make_dir", "symlink", "replace", "replace")
BLOB_LINKS = ("/etc/passwd", "/dev/null", f"{CASE}/canary")


def blob_mutation(draw):
    """A snapshot blob that is corrupt, missing, of another content, or not a file."""
    blob = f"blob:{between(draw, 0, 20)}"
    op = one(draw, BLOB_OPS)
    if op == "flip":
        return [op, blob, between(draw, 0, 10 ** 5), between(draw, 1, 255)]
    if op == "truncate":
        return [op, blob, between(draw, 0, 10 ** 5)]
    if op == "symlink":
        return [op, blob, one(draw, BLOB_LINKS)]
    if op == "replace":
        return [op, blob, one(draw, BLOB_CONTENTS)]
    return [op, blob]


LEDGER_KINDS = ("ledger_bytes", "ledger_entries", "blobs")


def ledger_setup(draw, ctx, kind):
    """``{seed, mutations}`` for the ledger of a case of the given input kind."""
    seeds = tuple(sorted(ctx["seeds"]))
    if kind in LEDGER_KINDS:
        seeds = tuple(name for name in seeds if ctx["seeds"][name]["lines"]) or seeds
    seed_name = one(draw, seeds)
    seed = ctx["seeds"][seed_name]
    mutations = []
    if kind == "ledger_bytes":
        mutations = [byte_mutation(draw) for _index in range(between(draw, 1, 3))]
    elif kind == "ledger_entries":
        if between(draw, 0, 1):
            mutations = [entry_edit(draw, seed) for _index in range(between(draw, 1, 2))]
            if chance(draw, 3):
                mutations.append(["rehash"])  # a consistent rewrite: only an anchor reveals it
        else:
            mutations = [hostile_entry(draw, seed) for _index in range(between(draw, 1, 2))] + [["rehash"]]
    elif kind == "blobs":
        mutations = [blob_mutation(draw) for _index in range(between(draw, 1, 2))]
    return {"seed": seed_name, "mutations": mutations}


# ------------------------------------------------------------------------------------------ cases


class Builder:
    """Collects one case: parameters, files to create, units to fingerprint."""

    def __init__(self, draw, ctx, module, kinds, read_only_choice=False):
        self.draw = draw
        self.ctx = ctx
        self.kind = one(draw, kinds)
        self.params = {}
        self.setup = {"ledgers": {}, "files": {}, "sysfs": {}, "hold_run_lock": []}
        self.module = module
        self.btrfs_default = False
        # A third of the runs of a module that changes the host are in check mode (info modules: half).
        self.check_mode = between(draw, 0, 1) == 0 if read_only_choice else between(draw, 0, 9) < 3
        self.diff = between(draw, 0, 1) == 0

    def ledger(self, kind=None, relative="ledger"):
        self.setup["ledgers"][relative] = ledger_setup(self.draw, self.ctx, kind or self.kind)
        return self.ctx["seeds"][self.setup["ledgers"][relative]["seed"]]

    def supports(self, option):
        return option in (self.ctx["options"].get(self.module) or KNOWN_OPTIONS[self.module])

    def ledger_options(self):
        """ledger_path (in the case directory unless the case is about paths) and lock_timeout."""
        if not self.supports("ledger_path"):
            return
        draw = self.draw
        self.params["ledger_path"] = case_path(draw, "ledger") if self.kind == "paths" else LEDGER
        if self.kind == "lock":
            self.setup["hold_run_lock"].append("ledger/run.lock")
            # 1 s of waiting once in a while: the wait and its message; mostly 0 s, to keep the run short.
            self.params["lock_timeout"] = 1 if chance(draw, 12) else one(draw, (0, -1, -100))
        elif self.supports("lock_timeout") and chance(draw, 5):
            self.params["lock_timeout"] = one(draw, (0, 1, 5, 120, -1, 10 ** 9)) if between(draw, 0, 1) else bad_int(draw)

    def generic_defect(self):
        """An option-level defect any module can have: an unknown option, a wrong type, a new option's junk."""
        draw = self.draw
        options = tuple(sorted(self.ctx["options"].get(self.module) or KNOWN_OPTIONS[self.module]))
        choice = one(draw, ("unknown", "wrong_type", "new_option", "internal"))
        if choice == "unknown":
            self.params[one(draw, OPTION_TYPOS) if between(draw, 0, 1) else draw(SHORT_TEXT)] = junk(draw)
        elif choice == "wrong_type":
            option = one(draw, options)
            self.params[option] = junk(draw)
            if option in PATH_OPTIONS and self.params[option] in (None, ""):
                self.check_mode = True  # that is the default path: the system's own files, only read
        elif choice == "new_option":
            new = tuple(sorted(set(options) - KNOWN_OPTIONS[self.module] - PATH_OPTIONS))
            if new:
                self.params[one(draw, new)] = junk(draw)
        else:
            self.params[one(draw, ("_ansible_debug", "_ansible_verbosity", "_ansible_no_log"))] = junk(draw)

    def done(self):
        names = set()
        _collect_units(self.params, names)
        return {"module": self.module, "kind": self.kind, "params": self.params, "check_mode": self.check_mode,
                "diff": self.diff, "setup": self.setup, "units": sorted(names), "btrfs_default": self.btrfs_default}


def _collect_units(value, names):
    if isinstance(value, dict):
        for key, item in value.items():
            if _unitish(key):
                names.add(key)
            _collect_units(item, names)
    elif isinstance(value, list):
        for item in value:
            _collect_units(item, names)
    elif _unitish(value):
        names.add(value)


def _unitish(value):
    return isinstance(value, str) and "." in value and "/" not in value and len(value) < 200


def modular(function):
    """A module's case strategy: FUNCTION(draw, ctx) as a Hypothesis strategy of ctx."""
    def draw_case(draw, ctx):
        _Choices.random = draw(RANDOMS)
        return function(draw, ctx)

    def strategy(ctx):
        return st.composite(lambda draw: draw_case(draw, ctx))()
    strategy.__name__ = function.__name__
    return strategy


QUERIES = ("units", "drift", "in_sync", "units.*.active_state", "length(units)", "units | keys(@)", "drift.*.problem",
           "[", "units[?", "`bad", "length(`1`)", "sort(units)", "max_by(units, &x)", "entries[0].changes",
           "checkpoint.size", "valid && `true`", "problems[*].kind", "nodes[].cpus", "devices[?kind=='gpu'].names[0]",
           "", " ", "@", "to_number('x')", "abs(`-1`)", "foo.bar.baz" * 40, "a" * 5000, "\u00e4",
           'units."fuzz-a.service"', "snapshots[-1].digest", "entries[?action=='snapshot'] | length(@)")


def query(draw):
    return one(draw, QUERIES) if between(draw, 0, 3) else draw(TEXT)


# ---- opdbus_state

STATE_KINDS = ("valid", "document", "document", "document", "src_file", "params", "unit_names", "absent_units",
               "refusable", "ledger_bytes", "ledger_entries", "lock", "paths", "default_paths")
STATE_FILE_CONTENTS = ({"text": "{not json"}, {"dir": True}, {"json": []}, files_b64(b"\xff"), {"text": ""})
STATE_PARAM_DEFECTS = ("both", "neither", "state_string", "scope", "job_timeout", "lock_timeout", "generic", "generic")
SCOPES = ("user", "User", "", "global", 1, None, ["system"])


@modular
def opdbus_state(draw, ctx):
    case = Builder(draw, ctx, "opdbus_state", STATE_KINDS)
    kind = case.kind
    doc = document(valid_units(draw))
    if kind == "document":
        doc = bad_document(draw)
    elif kind == "unit_names":
        doc = bad_document(draw, ["unit_name"])
    elif kind == "absent_units":
        doc = bad_document(draw, ["absent_required"]) if between(draw, 0, 1) else document(
            {name: absent_fields(draw) for name in several(draw, ABSENT, 1, 3, unique=True)})
    elif kind == "refusable":
        doc = bad_document(draw, ["systemd_refuses"])
    if kind == "src_file":
        case.params["src"], files = src_file(draw, doc)
        case.setup["files"].update(files)
    else:
        case.params["state"] = doc
    if kind == "default_paths":
        case.check_mode = True  # the system's own ledger and state file are only read
    else:
        case.ledger_options()
        case.params["state_file"] = case_path(draw, "state.json") if kind == "paths" else f"{CASE}/state.json"
    if kind in LEDGER_KINDS + ("lock",) or chance(draw, 4):
        case.ledger(kind if kind in LEDGER_KINDS else "valid")
    if chance(draw, 6):
        case.setup["files"]["state.json"] = {"json": doc} if chance(draw, 3) else one(draw, STATE_FILE_CONTENTS)
    if kind == "params":
        choice = one(draw, STATE_PARAM_DEFECTS)
        if choice == "both":
            case.params["src"] = f"{CASE}/doc.json"
            case.setup["files"]["doc.json"] = {"json": doc}
        elif choice == "neither":
            case.params.pop("state", None)
        elif choice == "state_string":
            case.params["state"] = one(draw, (json.dumps(doc), "version=1", "garbage", "", "[]", "null",
                                              json.dumps(doc)[:-1]))
        elif choice == "scope":
            case.params["scope"] = one(draw, SCOPES)
        elif choice in ("job_timeout", "lock_timeout"):
            case.params[choice] = bad_int(draw)
        else:
            case.generic_defect()
    return case.done()


# ---- opdbus_state_info

STATE_INFO_KINDS = ("valid", "document", "document", "src_file", "params", "unit_names", "absent_units", "query",
                    "default_paths")
UNITS_TYPES = ("fuzz-a.service", "fuzz-a.service,fuzz-b.service", 5, {"a": 1}, [None], [[]], [{}], [1, 2])


@modular
def opdbus_state_info(draw, ctx):
    case = Builder(draw, ctx, "opdbus_state_info", STATE_INFO_KINDS, read_only_choice=True)
    kind = case.kind
    params = case.params
    doc = document(valid_units(draw))
    if kind == "document":
        doc = bad_document(draw)
    elif kind == "absent_units":
        doc = bad_document(draw, ["absent_required"])
    if kind == "src_file":
        params["src"], files = src_file(draw, doc)
        case.setup["files"].update(files)
    elif kind == "default_paths":
        params["src"] = "/etc/op-dbus/state.json"
    elif kind in ("document", "absent_units") or between(draw, 0, 1):
        params["state"] = doc
    if kind == "unit_names":
        params["units"] = [one(draw, BAD_NAMES + PRESENT + ABSENT) if between(draw, 0, 2) else draw(TEXT)
                           for _index in range(between(draw, 1, 5))]
    elif not chance(draw, 6) or not chance(draw, 30):
        # Without units the module reads every unit systemd knows (a second or two): rarely.
        params["units"] = several(draw, PRESENT + ABSENT, 1, 6)
    if kind == "query" or chance(draw, 6):
        params["query"] = query(draw)
    if kind == "params":
        choice = one(draw, ("both", "scope", "units_type", "generic"))
        if choice == "both":
            params["state"] = doc
            params["src"] = "/etc/passwd"
        elif choice == "scope":
            params["scope"] = one(draw, SCOPES)
        elif choice == "units_type":
            params["units"] = one(draw, UNITS_TYPES)
        else:
            case.generic_defect()
    return case.done()


# ---- opdbus_ledger_info

LEDGER_INFO_KINDS = ("valid", "ledger_bytes", "ledger_bytes", "ledger_bytes", "ledger_entries", "ledger_entries",
                     "blobs", "anchor", "anchor", "params", "query", "paths", "default_paths")
ANCHOR_DEFECTS = ("none", "size", "root", "origin", "missing", "extra", "type", "whole")
ANCHOR_SIZES = (10 ** 20, "1", 1.5, True, None)
ANCHOR_ORIGINS = ("opdbus:other:0", "", None, 5)
ANCHOR_EXTRA = ("checkpoint", "Size", "proof")
ANCHOR_KEYS = ("origin", "size", "root")
LEDGER_PATHS = ("/", "/etc", "/proc/self", "", ".")


def anchor(draw, seed):
    anchors = seed["anchors"]
    base = dict(one(draw, anchors))
    defect = one(draw, ANCHOR_DEFECTS)
    if defect == "size":
        base["size"] = between(draw, -3, len(anchors) + 3) if between(draw, 0, 2) else one(draw, ANCHOR_SIZES)
    elif defect == "root":
        root = base["root"]
        base["root"] = one(draw, (root.upper(), root[:-1], root + "0", "0" * 64, "", None, 5,
                                  root[:10] + ("0" if root[10] != "0" else "1") + root[11:]))
    elif defect == "origin":
        base["origin"] = one(draw, ANCHOR_ORIGINS + ((base["origin"] or "") + "x",))
    elif defect == "missing":
        base.pop(one(draw, ANCHOR_KEYS))
    elif defect == "extra":
        base[one(draw, ANCHOR_EXTRA)] = junk(draw)
    elif defect == "type":
        return one(draw, ("size=1 root=abc", "", 5, [base], json.dumps(base), None))
    elif defect == "whole":
        return {one(draw, ANCHOR_KEYS): junk(draw) for _index in range(between(draw, 0, 3))}
    return base


@modular
def opdbus_ledger_info(draw, ctx):
    case = Builder(draw, ctx, "opdbus_ledger_info", LEDGER_INFO_KINDS, read_only_choice=True)
    kind = case.kind
    params = case.params
    seed = ctx["seeds"]["history"]
    if kind == "default_paths":
        if between(draw, 0, 1):
            params["path"] = "/var/lib/op-dbus/blockchain"
    elif kind == "paths":
        params["path"] = case_path(draw, "ledger") if between(draw, 0, 1) else one(draw, LEDGER_PATHS)
        seed = case.ledger("valid")
    else:
        params["path"] = LEDGER
        seed = case.ledger(kind if kind in LEDGER_KINDS else "valid")
    if kind == "anchor" or chance(draw, 4):
        params["anchor"] = anchor(draw, seed)
    if between(draw, 0, 1):
        params["since"] = bad_int(draw) if kind == "params" else between(draw, -30, 30)
    if between(draw, 0, 1):
        params["limit"] = bad_int(draw) if kind == "params" else between(draw, -2, 30)
    if between(draw, 0, 1):
        params["fail_on_invalid"] = bad_bool(draw) if kind == "params" else between(draw, 0, 1) == 1
    if kind == "query" or chance(draw, 6):
        params["query"] = query(draw)
    if kind == "params" and between(draw, 0, 1):
        case.generic_defect()
    return case.done()


# ---- opdbus_snapshot

SNAPSHOT_KINDS = ("valid", "snapshot_id", "snapshot_id", "retention", "retention", "params", "btrfs_paths",
                  "btrfs_paths", "ledger_bytes", "ledger_entries", "ledger_entries", "blobs", "lock", "paths",
                  "unit_names", "default_paths")
SNAPSHOT_STATES = ("present", "present", "restored", "restored", "pruned", "absent")
SNAPSHOT_SUBVOLUMES = (f"{BTRFS}/@data", f"{BTRFS}/@comp")
BAD_BTRFS_PATHS = (f"{BTRFS}/@ro", f"{BTRFS}/plain", f"{BTRFS}/file", f"{BTRFS}/missing", "/tmp", "relative", "",
                   "/", BTRFS, f"{BTRFS}/link", f"{BTRFS}/@data\n", f"{BTRFS}/@data/", f"{BTRFS}/@data/inner",
                   f"{BTRFS}/@snapshots", f"{BTRFS}/../btrfs/@data", f"{CASE}/canary")
SNAPSHOT_DIRS = (f"{BTRFS}/@snapshots", f"{BTRFS}/@snapshots/new")
BAD_SNAPSHOT_DIRS = (f"{BTRFS}/missing/deeper", "/tmp/opdbus-fuzz-snaps", f"{BTRFS}/file", f"{CASE}/snaps", "relative",
                     f"{BTRFS}/@ro/x", f"{BTRFS}/@data", "")
PERIODS = ("hourly", "daily", "weekly", "monthly", "quarterly", "yearly", "max_total")
BAD_COUNTS = (10 ** 12, "2", "x", 1.5, True, None, [], {})
BAD_POLICIES = ("hourly=2", "", 5, [{"hourly": 1}], {"max_total": 3}, {"max_total": 0}, {"max_total": -1, "daily": 1},
                {}, {"fortnightly": 1, "daily": 2}, {"Hourly": 1})
BAD_IDS = ("-1", "0", "abc", "1.5", " 3 ", "3\n", "9" * 30, "", "LATEST", "last", "previous-1", "0x1", "1e2", "+1",
           "\u0663", 1.5, True, None, [], {})
LABELS = ("first", "last", "new")
SNAPSHOT_STATE_FILES = ({"json": document({"fuzz-a.service": {"active_state": "active"}})}, {"text": "{"},
                        {"dir": True}, {"json": document({"fuzz-a.service": {"enabld": True}})})
SNAPSHOT_PARAM_DEFECTS = ("state", "label", "units", "btrfs_type", "required", "generic")
BAD_STATES = ("latest", "", "Present", "restore", None, 1, ["present"])
BAD_UNIT_LISTS = ("fuzz-a.service", 5, [None], [{"a": 1}], [[]], [])
BAD_SUBVOLUME_LISTS = (f"{BTRFS}/@data", 5, [None], [[f"{BTRFS}/@data"]], {})


def retention(draw, kind):
    if kind == "retention" and chance(draw, 4):
        return one(draw, BAD_POLICIES)
    policy = {}
    for _index in range(between(draw, 0 if kind == "retention" else 1, 4)):
        count = between(draw, 0, 5)
        if kind == "retention" and chance(draw, 3):
            count = between(draw, -3, -1) if between(draw, 0, 1) else one(draw, BAD_COUNTS)
        policy[one(draw, PERIODS)] = count
    return policy


def snapshot_id(draw, kind, seed):
    known = tuple(str(seq) for seq in seed.get("snapshot_ids", [])) + tuple(str(index) for index in range(seed["lines"]))
    if kind == "snapshot_id" and between(draw, 0, 1):
        return one(draw, BAD_IDS) if between(draw, 0, 2) else between(draw, -3, 40)
    return one(draw, ("latest", "previous") + known)


@modular
def opdbus_snapshot(draw, ctx):
    case = Builder(draw, ctx, "opdbus_snapshot", SNAPSHOT_KINDS)
    kind = case.kind
    params = case.params
    state = params["state"] = one(draw, SNAPSHOT_STATES)
    seed = ctx["seeds"]["history"]
    if kind == "default_paths":
        case.check_mode = True
    else:
        case.ledger_options()
        params["state_file"] = case_path(draw, "state.json") if kind == "paths" else f"{CASE}/state.json"
        seed = case.ledger(kind if kind in LEDGER_KINDS else "valid")
    if state in ("restored", "absent") or kind == "snapshot_id":
        params["id"] = snapshot_id(draw, kind, seed)
    if state == "pruned" or kind == "retention" or chance(draw, 5):
        params["retention"] = retention(draw, kind)
    if state == "present":
        if kind == "unit_names":
            params["units"] = several(draw, BAD_NAMES + ABSENT + PRESENT, 1, 4)
        elif not chance(draw, 40):  # without units, every unit systemd knows (seconds): rarely
            params["units"] = several(draw, PRESENT + ABSENT[:2], 1, 5)
        if chance(draw, 3):
            params["label"] = one(draw, LABELS) if between(draw, 0, 1) else draw(TEXT)
        if kind == "btrfs_paths" or chance(draw, 6):
            pool = SNAPSHOT_SUBVOLUMES + (BAD_BTRFS_PATHS if kind == "btrfs_paths" else ())
            params["btrfs_subvolumes"] = several(draw, pool, 1, 3)
            if between(draw, 0, 1):
                params["btrfs_snapshot_dir"] = one(draw, SNAPSHOT_DIRS + (BAD_SNAPSHOT_DIRS if kind == "btrfs_paths"
                                                                          else ()))
    if chance(draw, 5):
        case.setup["files"]["state.json"] = one(draw, SNAPSHOT_STATE_FILES)
    if kind == "params":
        choice = one(draw, SNAPSHOT_PARAM_DEFECTS)
        if choice == "state":
            params["state"] = one(draw, BAD_STATES)
        elif choice == "label":
            params["label"] = junk(draw)
        elif choice == "units":
            params["units"] = one(draw, BAD_UNIT_LISTS)
        elif choice == "btrfs_type":
            params["btrfs_subvolumes"] = one(draw, BAD_SUBVOLUME_LISTS)
        elif choice == "required":
            params["state"] = one(draw, ("restored", "absent", "pruned"))
            params.pop("id", None)
            params.pop("retention", None)
        else:
            case.generic_defect()
    return case.done()


# ---- opdbus_numa

NUMA_KINDS = ("valid", "numa_spec", "numa_spec", "numa_spec", "unit_names", "absent_units", "sysfs", "sysfs",
              "params", "paths", "lock")
NUMA_UNITS = ("fuzz-a.service", "fuzz-b.service", "fuzz-c.service", "fuzz-static.service", "fuzz-own.service",
              "fuzz-tmpl@one.service", "fuzz-sock.socket", "fuzz-masked.service", "fuzz-bad.service")
NUMA_BAD_UNITS = ("fuzz-tick.timer", "fuzz-absent.service", "fuzz-gone.mount") + BAD_NAMES[:12]
NUMA_ABSENT = ("fuzz-absent.service", "cups.service", "fuzz-none@x.service")
STRATEGIES = ("local-node", "bind", "preferred", "interleave", "default")
DEVICES = ("gpu0", "gpu1", "nvme0", "eth0", "lo", "0000:00:02.0")
BAD_ID_LISTS = (-1, 99, [0, 99], "0-", "a", "1-0", "0-100000", "0-3,a", ",", "", [], [True], [0.5], {"0": 1}, "0--1",
                " 0 ", "0,,1", "00", [[0]], 10 ** 20, "\u0660", True, 1.5, "0-65535", "65536")
NUMA_DEFECTS = ("strategy", "nodes", "device", "cpus", "both", "unknown", "not_a_mapping", "default_with_nodes",
                "preferred_many", "empty")
BAD_STRATEGIES = ("local", "Bind", "", None, 1, ["bind"], "interleaved", "spread")
BAD_DEVICES = ("gpu9", "nvme7", "", "0000:ff:ff.7", "../sda", 0, None, ["gpu0"], "eth99", "gpu-1", "GPU0")
SPEC_TYPOS = ("node", "cpu", "policy", "mask", "Strategy")
NOT_SPECS = ("bind", 0, ["bind"], True, "")
PREFERRED_MANY = ([0, 1], "0-3", [0, 0, 1])
DROPIN_NAMES = ("50-opdbus-numa.conf", "99-x.conf", "../x.conf", "x.conf/", "x", ".conf", "", "a/b.conf",
                "d" * 300 + ".conf", "x.conf\n", ".x.conf", "-x.conf", "x .conf", "\u00e4.conf")
NUMA_UNITS_TYPES = ([], "fuzz-a.service", None, ["fuzz-a.service"], {}, 5)
NUMA_STATES = ("Present", "", None, "removed", 1)


def id_list(draw, good):
    """A node or CPU list: GOOD values, or ones that are wrong in a specific way."""
    choice = between(draw, 0, 2)
    if choice == 0:
        return one(draw, good)
    if choice == 1:
        return one(draw, BAD_ID_LISTS)
    return [between(draw, -2, 200) for _index in range(between(draw, 0, 4))]


def numa_spec(draw, kind, nodes, cpus):
    spec = {"strategy": one(draw, STRATEGIES)}
    if spec["strategy"] not in ("default", "interleave") or between(draw, 0, 1):
        if between(draw, 0, 1):
            spec["nodes"] = one(draw, nodes)
        elif spec["strategy"] != "default":
            spec["device"] = one(draw, DEVICES)
    if chance(draw, 4):
        spec["cpus"] = one(draw, cpus)
    if kind != "numa_spec":
        return spec
    defect = one(draw, NUMA_DEFECTS)
    if defect == "strategy":
        spec["strategy"] = one(draw, BAD_STRATEGIES)
    elif defect == "nodes":
        spec["nodes"] = id_list(draw, nodes)
        spec.pop("device", None)
    elif defect == "device":
        spec["device"] = one(draw, BAD_DEVICES)
        spec.pop("nodes", None)
    elif defect == "cpus":
        spec["cpus"] = id_list(draw, cpus)
    elif defect == "both":
        spec["nodes"], spec["device"] = 0, "gpu0"
    elif defect == "unknown":
        spec[one(draw, SPEC_TYPOS)] = junk(draw)
    elif defect == "not_a_mapping":
        return one(draw, NOT_SPECS)
    elif defect == "default_with_nodes":
        spec = {"strategy": "default", "nodes": 0}
    elif defect == "preferred_many":
        spec = {"strategy": "preferred", "nodes": one(draw, PREFERRED_MANY)}
    else:
        spec = {}
    return spec


SYSFS_BASES = ("workstation", "dgx", "laptop", "vm", "without_numa")
# Edited trees are copied per case: the DGX tree (500 entries) only ever serves in place.
EDITABLE_BASES = ("workstation", "laptop", "vm", "without_numa")
SYSFS_ELSEWHERE = ("/nonexistent", "/tmp", f"{CASE}/canary", "", "relative", "/proc")
SYSFS_VARIANTS = ("edit", "edit", "edit", "remove", "elsewhere")
SYSFS_CONTENTS = ("", "garbage", "-1", "0-99999999", "\x00", "1,2,", "0-3,a", "99999999999999999999", "-5", "0x",
                  "Node 0 MemTotal: x kB", "10 20\n30", "1-0", "\u0661", "0\n1\n")


def sysfs_root(draw, ctx, kind, case):
    """The sysfs_root option: the real /sys, or a fixture tree of a real machine's layout, possibly broken."""
    if kind != "sysfs" and chance(draw, 3):
        return "/sys"
    if kind != "sysfs":
        return f"{TREES}/{one(draw, tuple(name for name in SYSFS_BASES if name in ctx['trees']))}"
    base = one(draw, tuple(name for name in EDITABLE_BASES if name in ctx["trees"]))
    variant = one(draw, SYSFS_VARIANTS)
    if variant == "elsewhere":
        return one(draw, SYSFS_ELSEWHERE)
    files = ctx["trees"][base]
    edits = {}
    for _index in range(between(draw, 1, 3)):
        path = one(draw, files)
        if variant == "remove":
            edits[path if between(draw, 0, 1) else path.rsplit("/", 1)[0]] = None
        else:
            edits[path] = one(draw, SYSFS_CONTENTS) if between(draw, 0, 2) else draw(TEXT)
    case.setup["sysfs"]["sysfs"] = {"base": base, "edits": edits}
    return f"{CASE}/sysfs"


@modular
def opdbus_numa(draw, ctx):
    case = Builder(draw, ctx, "opdbus_numa", NUMA_KINDS)
    kind = case.kind
    params = case.params
    params["sysfs_root"] = sysfs_root(draw, ctx, kind, case)
    if params["sysfs_root"] == "/sys":  # the test host: one node, CPUs 0-1 (a CI machine may have more)
        nodes, cpus = (0, [0], "0"), ("0", "1", "0-1", [0, 1], 1)
    else:
        nodes, cpus = (0, 1, [0], "0-1", [1]), ("0", "1", "0-3", [0, 1], 8)
    absent = chance(draw, 4)
    if absent:
        params["state"] = "absent"
    pool = NUMA_UNITS + (NUMA_BAD_UNITS if kind in ("unit_names", "absent_units") else ())
    names = several(draw, pool, 1, 4, unique=True)
    if kind == "unit_names":
        names.append(one(draw, NUMA_BAD_UNITS) if between(draw, 0, 2) else draw(TEXT))
    elif kind == "absent_units":
        names.append(one(draw, NUMA_ABSENT))
    params["units"] = {name: None if absent and between(draw, 0, 1) else numa_spec(draw, kind, nodes, cpus)
                       for name in names}
    if chance(draw, 4):
        params["restart"] = bad_bool(draw) if kind == "params" else between(draw, 0, 1) == 1
    if chance(draw, 5) or kind == "params":
        params["dropin_name"] = one(draw, DROPIN_NAMES)
    case.ledger_options()
    if kind == "lock" and "ledger_path" in params:
        case.ledger("valid")
    if kind == "params":
        choice = one(draw, ("units_type", "state", "job_timeout", "generic"))
        if choice == "units_type":
            params["units"] = one(draw, NUMA_UNITS_TYPES)
        elif choice == "state":
            params["state"] = one(draw, NUMA_STATES)
        elif choice == "job_timeout":
            params["job_timeout"] = bad_int(draw)
            params["restart"] = True
        else:
            case.generic_defect()
    return case.done()


# ---- opdbus_numa_info

@modular
def opdbus_numa_info(draw, ctx):
    case = Builder(draw, ctx, "opdbus_numa_info", ("valid", "sysfs", "sysfs", "sysfs", "query", "params"),
                   read_only_choice=True)
    case.params["sysfs_root"] = sysfs_root(draw, ctx, case.kind, case)
    if case.kind == "query" or chance(draw, 5):
        case.params["query"] = query(draw)
    if case.kind == "params":
        case.generic_defect()
    return case.done()


# ---- btrfs_subvolume and btrfs_info

BTRFS_NEW = (f"{BTRFS}/@new", f"{BTRFS}/@new2", f"{BTRFS}/plain/@new", f"{BTRFS}/@data/@new",
             f"{BTRFS}/@snapshots/@new")
BTRFS_EXISTING = (f"{BTRFS}/@data", f"{BTRFS}/@data/inner", f"{BTRFS}/@ro", f"{BTRFS}/@comp", BTRFS)
BTRFS_BAD = (f"{BTRFS}/@new/deep/x", f"{BTRFS}/plain", f"{BTRFS}/file", f"{BTRFS}/file/x", f"{BTRFS}/link",
             f"{BTRFS}/link/x", "/tmp/opdbus-fuzz-x", "/", "relative", "", f"{BTRFS}/@new\n", f"{BTRFS}/" + "n" * 300,
             f"{BTRFS}/../btrfs/@data", f"{BTRFS}/@ro/x", f"{BTRFS}/@snapshots/../@data", "/proc/self", "/etc",
             f"{BTRFS}/a\tb", f"{BTRFS}/-rf", f"{BTRFS}/@data/", f"{CASE}/canary", "/mnt")
BTRFS_KINDS = ("valid", "btrfs_paths", "btrfs_paths", "btrfs_paths", "params", "conflicting", "lock", "paths")
COMPRESSIONS = ("zstd", "lzo", "zlib", "none")
BAD_COMPRESSIONS = ("zstd:3", "ZSTD", "", "lz4", None, 1, "none ")
PRESENT_ONLY = (("snapshot_source", f"{BTRFS}/@data"), ("read_only", True), ("compression", "zstd"),
                ("default", False))
BAD_BTRFS_STATES = ("Present", "", "snapshot", None, 0)
BAD_PATH_TYPES = (5, None, [f"{BTRFS}/@data"], {"path": "x"}, True, 1.5)


@modular
def btrfs_subvolume(draw, ctx):
    case = Builder(draw, ctx, "btrfs_subvolume", BTRFS_KINDS)
    case.btrfs_default = True
    kind = case.kind
    params = case.params
    params["path"] = one(draw, BTRFS_NEW + BTRFS_EXISTING + (BTRFS_BAD if kind == "btrfs_paths" else ()))
    if chance(draw, 3):
        params["state"] = "absent"
    else:
        if chance(draw, 3):
            params["snapshot_source"] = one(draw, BTRFS_EXISTING + (BTRFS_BAD if kind == "btrfs_paths" else ()))
        if between(draw, 0, 1):
            params["read_only"] = between(draw, 0, 1) == 1
        if between(draw, 0, 1):
            params["compression"] = one(draw, COMPRESSIONS)
        if chance(draw, 4):
            params["default"] = between(draw, 0, 1) == 1
    if chance(draw, 4):
        params["recursive"] = between(draw, 0, 1) == 1
    case.ledger_options()
    if kind == "lock" and "ledger_path" in params:
        case.ledger("valid")
    if kind == "conflicting":
        params["state"] = "absent"
        option, value = one(draw, PRESENT_ONLY)
        params[option] = value
    elif kind == "params":
        choice = one(draw, ("compression", "bools", "state", "path_type", "generic"))
        if choice == "compression":
            params["compression"] = one(draw, BAD_COMPRESSIONS)
        elif choice == "bools":
            params[one(draw, ("read_only", "default", "recursive"))] = bad_bool(draw)
        elif choice == "state":
            params["state"] = one(draw, BAD_BTRFS_STATES)
        elif choice == "path_type":
            params["path"] = one(draw, BAD_PATH_TYPES)
        else:
            case.generic_defect()
    return case.done()


@modular
def btrfs_info(draw, ctx):
    case = Builder(draw, ctx, "btrfs_info", ("valid", "btrfs_paths", "btrfs_paths", "params"), read_only_choice=True)
    case.params["path"] = one(draw, BTRFS_EXISTING + BTRFS_BAD if case.kind == "btrfs_paths"
                              else BTRFS_EXISTING + (f"{BTRFS}/plain", f"{BTRFS}/@snapshots"))
    if case.kind == "params":
        choice = one(draw, ("missing", "type", "generic"))
        if choice == "missing":
            del case.params["path"]
        elif choice == "type":
            case.params["path"] = one(draw, BAD_PATH_TYPES)
        else:
            case.generic_defect()
    return case.done()


MODULES = {
    "opdbus_state": opdbus_state,
    "opdbus_state_info": opdbus_state_info,
    "opdbus_ledger_info": opdbus_ledger_info,
    "opdbus_snapshot": opdbus_snapshot,
    "opdbus_numa": opdbus_numa,
    "opdbus_numa_info": opdbus_numa_info,
    "btrfs_subvolume": btrfs_subvolume,
    "btrfs_info": btrfs_info,
}
