# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore points: retention (a table of histories and policies with the exact set each keeps, and its
properties), the history derived from ledger entries, the checks on digests and recorded BTRFS paths,
and the blob store on real files."""

from __future__ import annotations

import datetime
import hashlib
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger import blobs
from ansible_collections.opdbus.fleet.plugins.module_utils._state.apply import StateApplier
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.blobs import (
    BlobProblem, BlobStore, SnapshotError, require_digest,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshots import (
    RETENTION_PERIODS, History, SnapshotManager, btrfs_record_problem, check_blobs, declared_units, ledger_report, retained_ids, validate_retention,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import StateDocumentError

UTC = datetime.timezone.utc


class Snap:
    def __init__(self, snapshot_id, moment):
        self.id = snapshot_id
        self.moment = moment


def history(*times):
    """Snapshots with ids 1, 2, ... at the given UTC times ('YYYY-MM-DD HH:MM[:SS]')."""
    snaps = []
    for index, text in enumerate(times, start=1):
        fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
        snaps.append(Snap(index, datetime.datetime.strptime(text, fmt).replace(tzinfo=UTC)))
    return snaps


CASES = [
    # (name, times (ids 1..n in this order), policy, ids kept)
    ("empty history", (), {"daily": 3}, set()),
    ("one snapshot, count 0 keeps the newest", ("2026-01-01 10:00",), {"daily": 0}, {1}),
    ("hourly keeps the newest of the last 2 hours",
     ("2026-01-01 08:10", "2026-01-01 09:10", "2026-01-01 10:10"), {"hourly": 2}, {2, 3}),
    ("hourly: the newest within an hour wins",
     ("2026-01-01 09:05", "2026-01-01 09:55", "2026-01-01 10:01"), {"hourly": 2}, {2, 3}),
    ("hour boundary to the microsecond",
     ("2026-01-01 10:59:59", "2026-01-01 11:00:00"), {"hourly": 2}, {1, 2}),
    ("daily over five days, several a day",
     ("2026-03-01 01:00", "2026-03-01 23:00", "2026-03-02 12:00", "2026-03-03 00:00", "2026-03-03 05:00",
      "2026-03-04 12:00", "2026-03-05 07:00"), {"daily": 3}, {5, 6, 7}),
    ("daily boundary at midnight UTC", ("2026-03-01 23:59:59", "2026-03-02 00:00:00"), {"daily": 1}, {2}),
    ("sparse: the last N periods that have a snapshot",
     ("2026-01-01 12:00", "2026-01-10 12:00", "2026-01-20 12:00", "2026-01-30 12:00"), {"daily": 3}, {2, 3, 4}),
    ("weekly across the ISO year boundary (2026 has 53 ISO weeks)",
     ("2026-12-28 10:00", "2027-01-01 10:00", "2027-01-05 10:00"), {"weekly": 2}, {2, 3}),
    ("weekly: same ISO week number in different years are different weeks",
     ("2025-03-05 10:00", "2026-03-04 10:00"), {"weekly": 2}, {1, 2}),
    ("weekly: Dec 30 2024 belongs to ISO week 2025-W01",
     ("2024-12-29 10:00", "2024-12-30 10:00", "2025-01-02 10:00"), {"weekly": 2}, {1, 3}),
    ("weekly: Sunday ends the ISO week",
     ("2026-01-04 23:00", "2026-01-05 01:00"), {"weekly": 2}, {1, 2}),
    ("weekly with more weeks asked than exist keeps each week's newest",
     ("2026-01-05 10:00", "2026-01-06 10:00", "2026-01-13 10:00"), {"weekly": 52}, {2, 3}),
    ("monthly keeps the newest of the last 2 months",
     ("2026-01-31 23:00", "2026-02-01 00:00", "2026-02-28 10:00", "2026-03-01 10:00"), {"monthly": 2}, {3, 4}),
    ("monthly: January of two years are two months",
     ("2025-01-15 10:00", "2026-01-15 10:00"), {"monthly": 1}, {2}),
    ("quarterly: quarters start in January, April, July, October",
     ("2026-03-31 23:00", "2026-04-01 00:00", "2026-06-30 10:00", "2026-07-01 10:00"), {"quarterly": 2}, {3, 4}),
    ("quarterly across the year boundary",
     ("2025-12-31 23:00", "2026-01-01 00:00"), {"quarterly": 2}, {1, 2}),
    ("quarterly keeps Q4 of last year, not Q1 of it",
     ("2025-02-01 10:00", "2025-11-01 10:00", "2026-02-01 10:00"), {"quarterly": 2}, {2, 3}),
    ("yearly keeps the newest of each of the last 2 years",
     ("2024-06-01 10:00", "2025-01-01 10:00", "2025-12-31 10:00", "2026-05-01 10:00"), {"yearly": 2}, {3, 4}),
    ("leap day is its own day",
     ("2024-02-28 10:00", "2024-02-29 10:00", "2024-03-01 10:00"), {"daily": 3}, {1, 2, 3}),
    ("all counts 0 keep only the newest",
     ("2026-01-01 10:00", "2026-01-02 10:00"), {"daily": 0, "weekly": 0}, {2}),
    ("counts of 1 everywhere keep only the newest",
     ("2025-01-01 10:00", "2026-01-01 10:00", "2026-01-02 10:00"),
     {"hourly": 1, "daily": 1, "weekly": 1, "monthly": 1, "quarterly": 1, "yearly": 1}, {3}),
    ("equal timestamps: the later id is the newer",
     ("2026-01-01 10:00", "2026-01-01 10:00"), {"hourly": 1}, {2}),
    ("equal timestamps in different periods of another rule",
     ("2026-01-01 10:00", "2026-01-01 10:00", "2026-01-02 10:00"), {"daily": 2}, {2, 3}),
    ("a snapshot in the future is simply the newest",
     ("2026-01-01 10:00", "2099-01-01 10:00"), {"daily": 1}, {2}),
    ("future snapshots take periods like any other",
     ("2026-01-01 10:00", "2098-01-01 10:00", "2099-01-01 10:00"), {"yearly": 2}, {2, 3}),
    ("input order does not matter",
     ("2026-01-03 10:00", "2026-01-01 10:00", "2026-01-02 10:00"), {"daily": 2}, {1, 3}),
    ("rules add up: hourly and daily",
     ("2026-01-01 10:00", "2026-01-02 08:00", "2026-01-02 09:00", "2026-01-02 10:00"),
     {"hourly": 2, "daily": 2}, {1, 3, 4}),
    ("the guide's laptop policy on a mixed history",
     ("2025-08-15 10:00", "2025-11-20 10:00", "2026-01-05 10:00", "2026-01-12 09:00", "2026-01-13 09:00",
      "2026-01-14 09:00", "2026-01-14 10:00", "2026-01-14 11:00", "2026-01-14 12:00", "2026-01-14 13:00",
      "2026-01-14 14:00"),
     # hourly: 7-11; daily: 11, 5 (Jan 13), 4 (Jan 12); weekly: 11 (2026-W03), 3 (W02); quarterly: 11, 2.
     # 6 (Jan 14 09:00) is neither the newest of its day nor within the last five hours.
     {"hourly": 5, "daily": 3, "weekly": 2, "quarterly": 2}, {2, 3, 4, 5, 7, 8, 9, 10, 11}),
    ("max_total caps the kept set, oldest kept go first",
     ("2026-01-01 10:00", "2026-01-02 10:00", "2026-01-03 10:00", "2026-01-04 10:00", "2026-01-05 10:00"),
     {"daily": 5, "max_total": 3}, {3, 4, 5}),
    ("max_total 0 still keeps the newest", ("2026-01-01 10:00", "2026-01-02 10:00"), {"daily": 2, "max_total": 0}, {2}),
    ("max_total above the kept count changes nothing",
     ("2026-01-01 10:00", "2026-01-02 10:00"), {"daily": 2, "max_total": 10}, {1, 2}),
    ("sparse weeks months apart",
     ("2025-06-02 10:00", "2025-09-01 10:00", "2026-01-05 10:00"), {"weekly": 2}, {2, 3}),
]


@pytest.mark.parametrize("name, times, policy, kept", CASES, ids=[case[0] for case in CASES])
def test_retention_keeps_exactly(name, times, policy, kept):
    assert retained_ids(history(*times), validate_retention(policy)) == kept


def test_the_table_has_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("policy, message", [
    ({}, "set at least one of hourly"),
    ({"max_total": 5}, "set at least one of hourly"),
    ({"daily": -1}, "retention.daily: must be a whole number of 0 or more, not -1"),
    ({"daily": True}, "retention.daily: must be a whole number"),
    ({"daily": 1.5}, "retention.daily: must be a whole number"),
    ({"dayly": 1}, "retention: unknown key dayly"),
    ([], "retention must be a mapping"),
])
def test_invalid_policies_are_refused(policy, message):
    with pytest.raises(SnapshotError) as raised:
        validate_retention(policy)
    assert message in str(raised.value)


moments = st.datetimes(min_value=datetime.datetime(2020, 1, 1), max_value=datetime.datetime(2030, 12, 31),
                       timezones=st.just(UTC))
histories = st.lists(moments, max_size=60).map(lambda times: [Snap(i, t) for i, t in enumerate(times, 1)])
policies = st.dictionaries(st.sampled_from(RETENTION_PERIODS), st.integers(0, 6), min_size=1)


@settings(max_examples=300, deadline=None)
@given(histories, policies, st.none() | st.integers(0, 10))
def test_kept_count_is_bounded_and_the_newest_is_always_kept(snaps, policy, cap):
    if cap is not None:
        policy = dict(policy, max_total=cap)
    kept = retained_ids(snaps, policy)
    assert kept <= {snap.id for snap in snaps}
    if not snaps:
        assert kept == set()
        return
    bound = 1 + sum(policy.get(period, 0) for period in RETENTION_PERIODS)
    if cap is not None:
        bound = min(bound, max(cap, 1))
    assert 1 <= len(kept) <= bound
    newest = max(snaps, key=lambda snap: (snap.moment, snap.id))
    assert newest.id in kept


@settings(max_examples=200, deadline=None)
@given(histories, policies)
def test_pruning_again_keeps_everything_that_was_kept(snaps, policy):
    kept = retained_ids(snaps, policy)
    assert retained_ids([snap for snap in snaps if snap.id in kept], policy) == kept


# ------------------------------------------------------------------------------ history

DIGEST_A, DIGEST_B, DIGEST_C = ("a" * 64), ("b" * 64), ("c" * 64)


def entry(seq, action="snapshot", changes=None, digest=DIGEST_A, time="2026-01-01T10:00:00.000000Z"):
    if changes is None:
        changes = {"units": 3, "label": None, "btrfs": []} if action == "snapshot" else {"units": [], "files": []}
    return {"seq": seq, "action": action, "time": time, "state_sha256": digest, "changes": changes}


def test_restore_points_are_snapshots_applies_and_rollbacks_minus_removed_ones():
    entries = [entry(0), entry(1, "apply"), entry(2, "intent", {"for": "apply", "planned": []}, None),
               entry(3, "rollback"), entry(4, "apply", digest=None), entry(5, "prune", {"removed": [0, 3]}),
               entry(6, "snapshot"), entry(7, "delete_snapshot", {"removed": [6]}), entry(8, "apply")]
    history = History(entries)
    assert [(point.id, point.kind) for point in history.points()] == [(1, "apply"), (8, "apply")]
    assert {point_id: removed_by for point_id, (_point, removed_by) in history.removed.items()} == {0: 5, 3: 5, 6: 7}
    assert history.notes == []


def test_a_removal_before_the_restore_point_exists_removes_nothing():
    history = History([entry(0, "prune", {"removed": [1]}), entry(1)])
    assert [point.id for point in history.points()] == [1] and history.removed == {}


@pytest.mark.parametrize("bad, note", [
    (entry(0, changes=["not", "ours"]), None),  # not written by this collection: not a restore point
    (entry(0, digest=None), None),  # a failed run's outcome records no state
    (entry(0, digest="A" * 64), "is not a SHA-256 digest"),
    (entry(0, digest="../../etc/passwd"), "is not a SHA-256 digest"),
    (entry(0, time="yesterday"), "is not a UTC timestamp"),
    (entry(0, time=None), "is not a UTC timestamp"),
])
def test_entries_that_name_no_usable_state_are_not_restore_points(bad, note):
    history = History([bad, entry(1)])
    assert [point.id for point in history.points()] == [1]
    details = [item["detail"] for item in history.notes]
    assert details == [] if note is None else any(note in detail for detail in details)


@pytest.mark.parametrize("changes, note, label, units, btrfs", [
    ({"units": 3, "label": 7, "btrfs": []}, "label 7 is not a string", None, 3, []),
    ({"units": "3", "label": "x", "btrfs": []}, "units '3' is not a count", "x", None, []),
    ({"units": True, "label": None, "btrfs": []}, "units True is not a count", None, None, []),
    ({"units": 3, "label": None, "btrfs": "oops"}, "btrfs is not a list", None, 3, []),
    ({"units": 3, "label": None, "btrfs": [1, {"snapshot": 2}, {"snapshot": "/p/@s@x"}]},
     "btrfs[0] names no snapshot path", None, 3, [{"snapshot": "/p/@s@x"}]),
    ({}, None, None, None, []),
])
def test_malformed_snapshot_fields_are_left_out_and_noted(changes, note, label, units, btrfs):
    history = History([entry(0, changes=changes)])
    (point,) = history.points()
    assert (point.label, point.units, point.btrfs) == (label, units, btrfs)
    if note:
        assert history.notes[0]["seq"] == 0 and note in history.notes[0]["detail"]
    else:
        assert history.notes == []


@pytest.mark.parametrize("removal", [
    {"removed": "0"}, {"removed": None}, {}, ["removed", 0], {"removed": [True, "0", 0.0, None]},
])
def test_malformed_removals_remove_nothing_and_are_noted(removal):
    history = History([entry(0), entry(1, "prune", removal)])
    assert [point.id for point in history.points()] == [0]
    assert history.notes and history.notes[0]["seq"] == 1


@pytest.mark.parametrize("garbage", [None, 7, "x", [], {"seq": "1"}, {"seq": True, "action": "snapshot"},
                                     {"seq": 3}, {"seq": 4, "action": "snapshot"},
                                     {"seq": 5, "action": ["snapshot"], "changes": {}},
                                     {"seq": 6, "action": "prune", "changes": {"removed": [{}]}}])
def test_garbage_entries_never_raise(garbage):
    history = History([entry(0), garbage])
    assert [point.id for point in history.points()] == [0]


@pytest.mark.parametrize("wanted, expected", [("latest", 3), ("previous", 2), ("2", 2), (2, 2), ("1", 1), ("4", 4)])
def test_find_takes_any_restore_point_id_and_latest_previous_name_snapshots(wanted, expected):
    history = History([entry(1, "apply"), entry(2), entry(3), entry(4, "apply")])
    assert history.find(wanted).id == expected


@pytest.mark.parametrize("wanted, message", [
    ("9", "no restore point with id 9: restore points are snapshot, apply and rollback entries that recorded a "
          "state (newest: 2 (snapshot), 3 (apply))"),
    ("x", "id must be a restore point id"),
    ("1", "restore point 1 was removed by entry 4; its state is no longer kept"),
    ("0", "no restore point with id 0"),  # an intent is not a restore point
])
def test_find_refuses_what_is_not_there(wanted, message):
    history = History([entry(0, "intent", {"for": "apply", "planned": []}, None), entry(1), entry(2), entry(3, "apply"),
                       entry(4, "delete_snapshot", {"removed": [1]})])
    with pytest.raises(SnapshotError) as raised:
        history.find(wanted)
    assert message in str(raised.value)


def test_a_removed_id_is_none_where_that_is_no_change():
    history = History([entry(1), entry(2, "delete_snapshot", {"removed": [1]})])
    assert history.find("1", removed_ok=True) is None
    with pytest.raises(SnapshotError, match="no restore point with id 5"):
        history.find("5", removed_ok=True)


def test_there_is_no_previous_snapshot_of_one_even_with_applies():
    with pytest.raises(SnapshotError, match="there is no previous snapshot: the history holds 1 snapshot"):
        History([entry(1, "apply"), entry(2), entry(3, "apply")]).find("previous")


def test_retention_prunes_snapshots_and_applies_together():
    times = ["2026-01-01T08:10:00.000000Z", "2026-01-01T09:10:00.000000Z", "2026-01-01T09:20:00.000000Z",
             "2026-01-01T10:10:00.000000Z", "2026-01-01T10:20:00.000000Z"]
    kinds = ["snapshot", "apply", "snapshot", "rollback", "apply"]
    history = History([entry(seq, kind, time=time) for seq, (kind, time) in enumerate(zip(kinds, times))])
    # hourly 2: the newest of 10:xx (the apply 4) and of 09:xx (the snapshot 2), whatever their kind.
    assert retained_ids(history.points(), {"hourly": 2}) == {2, 4}
    # The newest restore point is always kept, even when it is an apply and the counts are 0.
    assert retained_ids(history.points(), {"daily": 0}) == {4}


# ------------------------------------------------------------------------------ digests and BTRFS paths

@pytest.mark.parametrize("digest", ["a" * 63, "a" * 65, "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 64 + "/",
                                    "", None, 7, "a" * 32 + "\n" + "a" * 31])
def test_only_lowercase_sha256_digests_become_blob_names(digest, tmp_path):
    with pytest.raises(SnapshotError, match="is not a SHA-256 digest"):
        require_digest(digest)
    with pytest.raises(SnapshotError):
        BlobStore(str(tmp_path)).path(digest)
    assert BlobStore(str(tmp_path)).size(digest) is None


def test_a_blob_path_is_a_direct_child_of_the_store(tmp_path):
    store = BlobStore(str(tmp_path))
    assert os.path.dirname(store.path(DIGEST_A)) == store.directory == str(tmp_path / "snapshots")


GOOD = {"source": "/mnt/pool/@state", "snapshot": "/mnt/pool/@snapshots/@state@20260101T100000.000000Z",
        "directory": "/mnt/pool/@snapshots"}


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"directory": None}, "recorded without its snapshot directory"),
    ({"source": 5}, "recorded without its source subvolume"),
    ({"snapshot": "/mnt/pool/@snapshots/../@state"}, "is not a normalised absolute path"),
    ({"snapshot": "/mnt/pool/@snapshots/./@state@20260101T100000.000000Z"}, "is not a normalised absolute path"),
    ({"snapshot": "mnt/pool/@snapshots/@state@20260101T100000.000000Z"}, "is not a normalised absolute path"),
    ({"directory": "/mnt/pool/@snapshots/"}, "is not a normalised absolute path"),
    ({"directory": "/mnt/pool/x/../@snapshots"}, "is not a normalised absolute path"),
    ({"snapshot": "/mnt/pool/@state@20260101T100000.000000Z"}, "is not directly inside its snapshot directory"),
    ({"snapshot": "/mnt/pool/@snapshots/deep/@state@20260101T100000.000000Z"}, "is not directly inside"),
    ({"snapshot": "/mnt/pool/@snapshots/@state"}, "is not named <subvolume>@<UTC time> after its source"),
    ({"snapshot": "/mnt/pool/@snapshots/@root@20260101T100000.000000Z"}, "is not named <subvolume>@<UTC time>"),
    ({"snapshot": "/mnt/pool/@snapshots/@state@20260101T100000.000000Zx"}, "is not named"),
    ({"source": "/mnt/pool/@st.te", "snapshot": "/mnt/pool/@snapshots/@stxte@20260101T100000.000000Z"}, "is not named"),
    ({"directory": "/", "snapshot": "/@state@20260101T100000.000000Z"}, None),
    ({"snapshot": "/mnt/pool/@snapshots/@state@20260101T100000.000000Z\x00"}, "is not a normalised absolute path"),
])
def test_recorded_btrfs_paths_must_be_where_this_module_puts_them(change, reason):
    problem = btrfs_record_problem(dict(GOOD, **change))
    if reason is None:
        assert problem is None
    else:
        assert reason in problem


# ------------------------------------------------------------------------------ blob store on real files

DOCUMENT = {"version": 1, "plugins": {"systemd": {"units": {"ssh.service": {"active_state": "active"}}}}}


def test_blobs_round_trip_and_are_named_by_the_uncompressed_content(tmp_path):
    store = BlobStore(str(tmp_path))
    digest = store.put(DOCUMENT)
    raw = zstandard.ZstdDecompressor().decompress(open(store.path(digest), "rb").read())
    assert hashlib.sha256(raw).hexdigest() == digest and store.get(digest) == DOCUMENT
    assert oct(os.stat(store.path(digest)).st_mode & 0o777) == "0o600"
    assert oct(os.stat(store.directory).st_mode & 0o777) == "0o700"
    assert store.digests() == [digest] and store.size(digest) > 0


def test_a_reused_blob_is_checked_and_a_damaged_one_written_again(tmp_path):
    store = BlobStore(str(tmp_path))
    digest = store.put(DOCUMENT)
    good = open(store.path(digest), "rb").read()
    with open(store.path(digest), "wb") as handle:
        handle.write(zstandard.ZstdCompressor().compress(b"{}"))
    with pytest.raises(BlobProblem) as raised:
        store.get(digest)
    assert raised.value.kind == "blob_corrupt" and "its content hashes to" in str(raised.value)
    assert store.put(DOCUMENT) == digest
    assert store.get(digest) == DOCUMENT and open(store.path(digest), "rb").read() == good


@pytest.mark.parametrize("damage, kind, message", [
    (os.unlink, "blob_missing", "is missing"),
    (lambda path: open(path, "wb").write(b"not zstd at all"), "blob_corrupt", "not zstd data"),
    (lambda path: open(path, "wb").write(b""), "blob_corrupt", "its content hashes to"),
    (lambda path: (os.unlink(path), os.symlink("/etc/hostname", path)), "blob_corrupt", "is a symbolic link"),
    (lambda path: (os.unlink(path), os.mkdir(path)), "blob_corrupt", "is not a regular file"),
    (lambda path: open(path, "wb").write(zstandard.ZstdCompressor().compress(b" " * 5000)),
     "blob_corrupt", "inflates to more than 4096 bytes"),
])
def test_damaged_blobs_are_named_by_kind(tmp_path, monkeypatch, damage, kind, message):
    monkeypatch.setattr(blobs, "MAX_DOCUMENT_BYTES", 4096)
    store = BlobStore(str(tmp_path))
    digest = store.put(DOCUMENT)
    damage(store.path(digest))
    with pytest.raises(BlobProblem) as raised:
        store.read(digest)
    assert raised.value.kind == kind and message in str(raised.value)
    assert store.path(digest) in str(raised.value)


def test_the_store_refuses_to_delete_through_a_symlinked_directory(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "ledger").mkdir()
    os.symlink(str(elsewhere), str(tmp_path / "ledger" / "snapshots"))
    with pytest.raises(SnapshotError, match="is not a directory"):
        BlobStore(str(tmp_path / "ledger")).check_directory()
    BlobStore(str(tmp_path / "no-ledger")).check_directory()  # nothing stored yet: nothing to refuse


def test_only_blob_files_are_listed(tmp_path):
    store = BlobStore(str(tmp_path))
    digest = store.put(DOCUMENT)
    for name in (".opdbus-tmp", "a" * 64 + ".json", "A" * 64 + ".json.zst", "notes.txt"):
        open(os.path.join(store.directory, name), "w").close()
    assert store.digests() == [digest]


def test_blob_problems_are_one_per_blob_naming_every_restore_point(tmp_path):
    store = BlobStore(str(tmp_path))
    good = store.put(DOCUMENT)
    points = History([entry(1, digest=good), entry(2, "apply", digest=DIGEST_B), entry(3, "apply", digest=DIGEST_B),
                      entry(4, "rollback", digest=DIGEST_C)]).points()
    problems = check_blobs(store, points, [])
    assert [(problem["seq"], problem["kind"]) for problem in problems] == [(2, "blob_missing"), (4, "blob_missing")]
    assert "restore point(s) 2 (apply), 3 (apply) cannot be restored" in problems[0]["detail"]


# ------------------------------------------------------------------------------ the report and the state file

def test_the_report_lists_restore_points_counts_pruned_ones_and_checks_blobs(tmp_path):
    directory = str(tmp_path / "ledger")
    ledger = Ledger(directory, host="h")
    store = BlobStore(directory)
    first = store.put(DOCUMENT)
    second = store.put({"version": 1, "plugins": {}})
    ledger.append("apply", {"units": [], "files": []}, state_sha256=first)
    ledger.append("snapshot", {"units": 1, "label": "x", "btrfs": []}, state_sha256=second)
    ledger.append("snapshot", {"units": 1, "label": None, "btrfs": []}, state_sha256=second)
    ledger.append("prune", {"removed": [2], "blobs": [], "btrfs": []})
    report, warnings = ledger_report(directory, limit=0)
    assert report["valid"] and report["problems"] == [] and warnings == []
    assert [(point["id"], point["kind"], point["label"]) for point in report["restore_points"]] == [
        (0, "apply", None), (1, "snapshot", "x")]
    assert report["pruned"] == 1 and report["entries"] == [] and report["in_progress"] is None
    with open(store.path(second), "wb") as handle:
        handle.write(zstandard.ZstdCompressor().compress(b"[]"))
    os.unlink(store.path(first))
    report, _warnings = ledger_report(directory)
    assert not report["valid"]
    assert [(problem["seq"], problem["kind"]) for problem in report["problems"]] == [(0, "blob_missing"),
                                                                                     (1, "blob_corrupt")]
    assert len(report["entries"]) == 4


def test_malformed_entries_are_reported_as_bad_records(tmp_path):
    directory = str(tmp_path / "ledger")
    Ledger(directory, host="h").append("prune", {"removed": "everything"})
    report, _warnings = ledger_report(directory)
    assert not report["valid"]
    assert report["problems"][0]["kind"] == "bad_record" and report["problems"][0]["seq"] == 0


def test_declared_units(tmp_path):
    path = tmp_path / "state.json"
    assert declared_units(str(path)) is None and declared_units(None) is None
    path.write_text('{"version": 1, "plugins": {"systemd": {"units": {"a.service": {"masked": true}}}}}')
    assert list(declared_units(str(path))) == ["a.service"]
    path.write_text("{")
    with pytest.raises(StateDocumentError, match=f"state_file: {path} is not valid JSON"):
        declared_units(str(path))
    path.write_text('{"version": 2}')
    with pytest.raises(StateDocumentError, match="unsupported version"):
        declared_units(str(path))


# ------------------------------------------------------------------------------ prune and delete on real files

def states(count):
    return [{"version": 1, "plugins": {"systemd": {"units": {f"u{index}.service": {"masked": True}}}}}
            for index in range(count)]


@pytest.fixture
def manager(tmp_path):
    """A SnapshotManager on a real ledger: an apply, three snapshots (two sharing a blob), all in this hour."""
    applier = StateApplier(None, str(tmp_path / "ledger"))
    store = BlobStore(applier.ledger.directory)
    digests = [store.put(document) for document in states(3)]
    applier.ledger.append("apply", {"units": [], "files": []}, state_sha256=digests[0])
    for digest in (digests[1], digests[2], digests[2]):
        applier.ledger.append("snapshot", {"units": 1, "label": None, "btrfs": []}, state_sha256=digest)
    return SnapshotManager(applier)


def disk(manager):
    """Every file under the ledger directory (blobs included) with its content, but the run lock."""
    found = {}
    for root, _dirs, names in os.walk(manager.ledger.directory):
        for name in set(names) - {"run.lock"}:  # who holds the run lock, written by check runs too
            with open(os.path.join(root, name), "rb") as handle:
                found[os.path.join(root, name)] = handle.read()
    return found


def test_prune_records_its_entry_and_then_deletes_exactly_what_it_lists(manager):
    digests = [point.digest for point in History(manager.ledger.entries()).points()]
    before = disk(manager)
    predicted = manager.prune({"hourly": 1}, check_mode=True)
    assert disk(manager) == before and predicted["entry"] is None
    done = manager.prune({"hourly": 1})
    assert [point["id"] for point in done["removed"]] == [point["id"] for point in predicted["removed"]] == [0, 1, 2]
    assert done["deleted"] == predicted["deleted"] == {"blobs": sorted(digests[:2]), "btrfs": []}
    assert [point["kind"] for point in done["removed"]] == ["apply", "snapshot", "snapshot"]
    assert done["entry"]["action"] == "prune" and done["entry"]["changes"] == {
        "policy": {"hourly": 1}, "removed": [0, 1, 2], "blobs": sorted(digests[:2]), "btrfs": []}
    assert manager.store.digests() == [digests[3]]  # the newest snapshot's blob, which 2 shared, stays
    assert manager.ledger.verify()["valid"]
    again = manager.prune({"hourly": 1})
    assert again["changed"] is False and again["entry"] is None and again["removed"] == []


def test_a_prune_killed_after_its_entry_is_finished_by_the_next_one(manager):
    first = manager.prune({"hourly": 1})
    # What a kill between the entry and the deletions leaves: the entry, and the blobs still there.
    for document in states(2):
        manager.store.put(document)
    size = manager.ledger.checkpoint()["size"]
    predicted = manager.prune({"hourly": 1}, check_mode=True)
    finished = manager.prune({"hourly": 1})
    assert finished["removed"] == predicted["removed"] == []
    assert finished["deleted"] == predicted["deleted"] == {"blobs": first["deleted"]["blobs"], "btrfs": []}
    assert finished["entry"]["seq"] == size and finished["entry"]["changes"]["resumes"] == [first["entry"]["seq"]]
    assert len(manager.store.digests()) == 1
    # A delete finishes what a removal left, too.
    leftover = manager.store.put(states(1)[0])
    deleted = manager.delete("3")
    assert deleted["deleted"]["blobs"] == sorted([leftover, deleted["restore_point"]["digest"]])
    assert deleted["entry"]["changes"]["resumes"] == [first["entry"]["seq"]]
    assert manager.store.digests() == [] and manager.ledger.verify()["valid"]


def test_prune_deletes_blobs_no_entry_names(manager):
    manager.prune({"hourly": 1})
    orphan = manager.store.put({"version": 1, "plugins": {}})  # a snapshot killed before its entry
    result = manager.prune({"hourly": 1})
    assert result["removed"] == [] and result["deleted"]["blobs"] == [orphan] and result["changed"]
    assert orphan not in manager.store.digests()
    assert "resumes" not in result["entry"]["changes"]


def test_delete_is_idempotent_by_id_and_latest_names_the_newest_snapshot(manager):
    deleted = manager.delete("latest")
    assert deleted["restore_point"]["id"] == 3 and deleted["entry"]["changes"]["removed"] == [3]
    assert deleted["deleted"]["blobs"] == []  # snapshot 2 still uses it
    again = manager.delete("3")
    assert again["changed"] is False and again["restore_point"] is None and again["entry"] is None
    apply = manager.delete("0")
    assert apply["restore_point"]["kind"] == "apply" and len(apply["deleted"]["blobs"]) == 1
    with pytest.raises(SnapshotError, match="no restore point with id 42"):
        manager.delete("42")


def tamper(ledger, edit):
    with open(ledger.ledger_path, "rb") as handle:
        data = handle.read()
    with open(ledger.ledger_path, "wb") as handle:
        handle.write(data.replace(*edit, 1))


@pytest.mark.parametrize("operation", [
    lambda manager, check: manager.prune({"hourly": 1}, check_mode=check),
    lambda manager, check: manager.delete("1", check_mode=check),
    lambda manager, check: manager.restore("1", check_mode=check),
])
@pytest.mark.parametrize("check", [False, True])
def test_destructive_steps_refuse_a_ledger_that_does_not_verify(manager, operation, check):
    tamper(manager.ledger, (b'"actor":"root"', b'"actor":"toor"'))  # entry 0, same length
    before = disk(manager)
    with pytest.raises(SnapshotError) as raised:
        operation(manager, check)
    assert "does not verify" in str(raised.value) and "Nothing was changed" in str(raised.value)
    assert raised.value.details["problems"][0] == dict(raised.value.details["problems"][0], kind="prev_root_mismatch",
                                                       seq=1)
    assert disk(manager) == before
    # Also when the edit moves the end of the ledger, and the last entry is a run's unfinished
    # intent (which a run that starts records as interrupted: a refusal must not even do that).
    manager.ledger.append("intent", {"for": "apply", "planned": [{"unit": "a.service", "action": "stop"}]})
    tamper(manager.ledger, (b'"actor":"toor"', b'"actor":"mallory"'))
    before = disk(manager)
    with pytest.raises(SnapshotError, match="does not verify"):
        operation(manager, check)
    assert disk(manager) == before


def test_restore_refuses_a_damaged_blob_before_touching_anything(manager):
    digest = History(manager.ledger.entries()).find("1").digest
    with open(manager.store.path(digest), "wb") as handle:
        handle.write(zstandard.ZstdCompressor().compress(b"{}"))
    before = disk(manager)
    with pytest.raises(SnapshotError, match="cannot restore snapshot 1: .* is corrupt: its content hashes to"):
        manager.restore("1")
    assert disk(manager) == before


def btrfs_snapshot_entry(manager, record):
    digest = manager.store.put(states(1)[0])
    return manager.ledger.append("snapshot", {"units": 1, "label": None, "btrfs": [record]}, state_sha256=digest)


@pytest.mark.parametrize("make_record", [
    # A real directory where the ledger says a snapshot is, but not one this module could have made.
    lambda root: {"source": f"{root}/@state", "snapshot": f"{root}/victim", "directory": root},
    lambda root: {"source": f"{root}/@state", "snapshot": f"{root}/@snapshots/../victim",
                  "directory": f"{root}/@snapshots"},
    lambda root: {"source": f"{root}/@state", "snapshot": f"{root}/link/@state@20260101T100000.000000Z",
                  "directory": f"{root}/link"},
    lambda root: {"source": f"{root}/@state", "snapshot": f"{root}/@state@20260101T100000.000000Z"},
])
def test_btrfs_paths_a_removal_would_delete_are_checked_first(manager, tmp_path, make_record):
    root = str(tmp_path / "pool")
    for path in ("victim", "@snapshots", "elsewhere/@state@20260101T100000.000000Z", "@state@20260101T100000.000000Z"):
        os.makedirs(os.path.join(root, path))
    os.symlink(os.path.join(root, "elsewhere"), os.path.join(root, "link"))
    point = btrfs_snapshot_entry(manager, make_record(root))["seq"]
    before = disk(manager)
    with pytest.raises(SnapshotError) as raised:
        manager.delete(str(point))
    assert f"restore point {point}: " in str(raised.value) and "Nothing was changed" in str(raised.value)
    assert disk(manager) == before and os.path.isdir(os.path.join(root, "victim"))


def test_recorded_btrfs_snapshots_that_are_gone_are_no_obstacle(manager, tmp_path):
    point = btrfs_snapshot_entry(manager, {"source": "/nowhere/@s", "snapshot": str(tmp_path / "gone"),
                                           "directory": str(tmp_path)})["seq"]
    result = manager.delete(str(point))
    assert result["entry"]["changes"]["removed"] == [point] and result["deleted"]["btrfs"] == []


def test_a_removed_restore_point_with_an_unreadable_btrfs_record_is_removed_with_a_warning(manager):
    point = btrfs_snapshot_entry(manager, "not a record")["seq"]
    result = manager.delete(str(point))
    assert result["entry"]["changes"]["removed"] == [point]
    assert manager.warnings == [f"entry {point}: btrfs[0] names no snapshot path; ignored (removed all the same)"]
