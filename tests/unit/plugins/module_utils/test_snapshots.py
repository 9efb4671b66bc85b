# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: a table of histories and policies with the exact set each keeps, and its properties."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.opdbus.fleet.plugins.module_utils.snapshots import (
    RETENTION_PERIODS, SnapshotError, find_snapshot, live_snapshots, retained_ids, validate_retention)

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


def snapshot_entry(seq, action="snapshot", changes=None, digest="ab" * 32):
    return {"seq": seq, "action": action, "time": "2026-01-01T10:00:00.000000Z", "state_sha256": digest,
            "changes": {"units": 3, "label": None, "btrfs": []} if changes is None else changes}


def test_history_is_snapshots_minus_pruned_and_deleted_ones():
    entries = [snapshot_entry(0), {"seq": 1, "action": "apply", "changes": {"units": []}}, snapshot_entry(2),
               snapshot_entry(3), snapshot_entry(4, "prune", {"removed": [0, 3]}),
               snapshot_entry(5), snapshot_entry(6, "delete_snapshot", {"removed": [5]})]
    assert [snapshot.id for snapshot in live_snapshots(entries)] == [2]


def test_history_skips_entries_it_did_not_write():
    entries = [snapshot_entry(0, changes=["not", "ours"]), snapshot_entry(1, digest=None), snapshot_entry(2)]
    assert [snapshot.id for snapshot in live_snapshots(entries)] == [2]


@pytest.mark.parametrize("wanted, expected", [("latest", 3), ("previous", 2), ("2", 2), (2, 2)])
def test_find_snapshot(wanted, expected):
    history_ = live_snapshots([snapshot_entry(2), snapshot_entry(3)])
    assert find_snapshot(history_, wanted).id == expected


@pytest.mark.parametrize("wanted, message", [
    ("9", "no snapshot with id 9 (newest ids: 2, 3)"), ("x", "id must be a snapshot id"),
])
def test_find_snapshot_refuses_what_is_not_there(wanted, message):
    with pytest.raises(SnapshotError) as raised:
        find_snapshot(live_snapshots([snapshot_entry(2), snapshot_entry(3)]), wanted)
    assert message in str(raised.value)


def test_there_is_no_previous_snapshot_of_one():
    with pytest.raises(SnapshotError, match="there is no previous snapshot"):
        find_snapshot(live_snapshots([snapshot_entry(2)]), "previous")
