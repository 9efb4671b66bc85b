# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore points: the history kept in the ledger, retention, and what opdbus_snapshot and
opdbus_ledger_info do with them (take, restore, prune, delete; the ledger report).

A restore point is a ledger entry that names a stored state: every ``snapshot`` entry, and every
``apply`` and ``rollback`` entry (the engine stores the state each changing run leaves). Its
``seq`` is its id and its ``state_sha256`` names its blob (see _ledger/blobs.py), so identical
states share one blob and deleting a blob never changes a ledger hash. ``prune`` and
``delete_snapshot`` entries record which ids went. Nothing else holds state.

Destructive steps act only on a ledger that verifies, and only on paths that the ledger's
content cannot steer elsewhere: a digest must be 64 lowercase hex characters before it becomes a
file name, and a recorded BTRFS snapshot must sit directly in its recorded snapshot directory,
reached without symbolic links, with the name this module gives. A removal's entry is appended
before anything is deleted, and every later removal deletes what an interrupted one left.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.info import normalise_path
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError, TaskFailed, host_file_error
from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import make_directories
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.blobs import (
    BlobProblem,
    BlobStore,
    DIGEST,
    SnapshotError,
    zstandard,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import LedgerError, canonical_json, select_entries
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import (
    load_document,
    snapshot_document,
    unit_name_problem,
    validate,
)


RETENTION_PERIODS = ("hourly", "daily", "weekly", "monthly", "quarterly", "yearly")
RETENTION_KEYS = RETENTION_PERIODS + ("max_total",)
RESTORE_POINT_ACTIONS = ("snapshot", "apply", "rollback")
REMOVAL_ACTIONS = ("prune", "delete_snapshot")
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
STAMP = r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z"
DEFAULT_BTRFS_DIR = "@snapshots"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class RestorePoint:
    """One live or removed restore point: ``id`` (its entry's seq), ``kind`` (the entry's action),
    ``moment`` (its time, parsed), ``digest`` (its blob), and for snapshots ``label``, ``units`` (a
    count) and ``btrfs`` (the recorded BTRFS snapshots, as stored)."""

    __slots__ = ("id", "kind", "time", "moment", "digest", "label", "units", "btrfs")

    def __init__(self, point_id, kind, time, moment, digest, label=None, units=None, btrfs=()):
        self.id = point_id
        self.kind = kind
        self.time = time
        self.moment = moment
        self.digest = digest
        self.label = label
        self.units = units
        self.btrfs = list(btrfs)

    @classmethod
    def from_entry(cls, entry):
        """``(RestorePoint or None, notes)``: the restore point ENTRY records, if it records one.

        Not a restore point: an entry without a state (a failed run's outcome) or whose changes are
        not an object (not written by this collection). Fields of the wrong type are left out and
        named in the notes; nothing here raises on what an entry holds.
        """
        seq, changes, digest = entry.get("seq"), entry.get("changes"), entry.get("state_sha256")
        if not isinstance(changes, dict) or not isinstance(digest, str):
            return None, []
        notes = []
        if not DIGEST.fullmatch(digest):
            return None, [f"entry {seq}: state_sha256 {digest!r} is not a SHA-256 digest"]
        try:
            moment = parse_time(entry.get("time"))
        except (TypeError, ValueError):
            return None, [f"entry {seq}: time {entry.get('time')!r} is not a UTC timestamp"]
        label = units = None
        btrfs = []
        if entry.get("action") == "snapshot":
            label = changes.get("label")
            if label is not None and not isinstance(label, str):
                notes.append(f"entry {seq}: label {label!r} is not a string; ignored")
                label = None
            units = changes.get("units")
            if units is not None and not _is_int(units):
                notes.append(f"entry {seq}: units {units!r} is not a count; ignored")
                units = None
            recorded = changes.get("btrfs", [])
            if not isinstance(recorded, list):
                notes.append(f"entry {seq}: btrfs is not a list; no BTRFS snapshot of it is known")
                recorded = []
            for index, item in enumerate(recorded):
                if isinstance(item, dict) and isinstance(item.get("snapshot"), str):
                    btrfs.append(item)
                else:
                    notes.append(f"entry {seq}: btrfs[{index}] names no snapshot path; ignored")
        return cls(seq, entry["action"], entry["time"], moment, digest, label, units, btrfs), notes

    def as_dict(self, store):
        return {"id": self.id, "kind": self.kind, "time": self.time, "digest": self.digest, "label": self.label,
                "units": self.units, "btrfs": self.btrfs, "size": store.size(self.digest)}


class History:
    """The restore points of a ledger's ENTRIES (oldest first): ``live`` and ``removed`` by id
    (``removed`` maps an id to ``(RestorePoint, seq of the entry that removed it)``), and ``notes``
    (``{seq, detail}``) on entries that hold something malformed, which are skipped, not raised on."""

    def __init__(self, entries):
        self.live = {}
        self.removed = {}
        self.notes = []
        for entry in entries:
            if isinstance(entry, dict) and _is_int(entry.get("seq")):
                self._add(entry)

    def _note(self, seq, detail):
        self.notes.append({"seq": seq, "detail": detail})

    def _add(self, entry):
        seq, action = entry["seq"], entry.get("action")
        if action in RESTORE_POINT_ACTIONS:
            point, notes = RestorePoint.from_entry(entry)
            for detail in notes:
                self._note(seq, detail)
            if point is not None:
                self.live[seq] = point
        elif action in REMOVAL_ACTIONS:
            changes = entry.get("changes")
            removed = changes.get("removed") if isinstance(changes, dict) else None
            if not isinstance(removed, list):
                self._note(seq, f"entry {seq}: a {action} entry without a list of removed ids; skipped")
                return
            for item in removed:
                if not _is_int(item):
                    self._note(seq, f"entry {seq}: removed id {item!r} is not a number; skipped")
                elif item in self.live:
                    self.removed[item] = (self.live.pop(item), seq)

    def points(self):
        """The live restore points, oldest first."""
        return [self.live[key] for key in sorted(self.live)]

    def labelled(self, label):
        return next((point for point in self.points() if point.label == label), None)

    def find(self, wanted, removed_ok=False):
        """The live restore point WANTED names: an id (the seq of a snapshot, apply or rollback
        entry), ``latest`` or ``previous`` (the newest snapshot and the one before it).

        With REMOVED_OK, an id that a later entry removed gives None instead of an error.
        """
        if wanted in ("latest", "previous"):
            snapshots = [point for point in self.points() if point.kind == "snapshot"]
            position = -1 if wanted == "latest" else -2
            if len(snapshots) < -position:
                raise SnapshotError(f"there is no {wanted} snapshot: the history holds {len(snapshots)} snapshot(s) "
                                    "(latest and previous name snapshots; name other restore points by id)")
            return snapshots[position]
        try:
            number = int(wanted)
        except (TypeError, ValueError):
            raise SnapshotError(f"id must be a restore point id (the seq of a snapshot, apply or rollback entry), "
                                f"latest or previous, not {wanted!r}") from None
        if number in self.live:
            return self.live[number]
        if number in self.removed:
            if removed_ok:
                return None
            raise SnapshotError(f"restore point {number} was removed by entry {self.removed[number][1]}; its state "
                                "is no longer kept")
        known = ", ".join(f"{point.id} ({point.kind})" for point in self.points()[-10:]) or "none"
        raise SnapshotError(f"no restore point with id {number}: restore points are snapshot, apply and rollback "
                            f"entries that recorded a state (newest: {known})")


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def validate_retention(policy):
    """Check a retention policy; returns it with only the counts that are set."""
    if not isinstance(policy, dict):
        raise SnapshotError("retention must be a mapping of period to count")
    unknown = sorted(set(policy) - set(RETENTION_KEYS))
    if unknown:
        raise SnapshotError(f"retention: unknown key {', '.join(unknown)} (known: {', '.join(RETENTION_KEYS)})")
    counts = {key: value for key, value in policy.items() if value is not None}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SnapshotError(f"retention.{key}: must be a whole number of 0 or more, not {value!r}")
    if not any(key in counts for key in RETENTION_PERIODS):
        raise SnapshotError("retention: set at least one of " + ", ".join(RETENTION_PERIODS)
                            + " (without one, pruning would keep only the newest restore point)")
    return counts


def period_key(period, moment):
    """Which PERIOD-long bucket MOMENT (UTC) falls in. Weeks are ISO weeks, with their ISO year."""
    if period == "hourly":
        return (moment.year, moment.month, moment.day, moment.hour)
    if period == "daily":
        return (moment.year, moment.month, moment.day)
    if period == "weekly":
        iso = moment.isocalendar()
        return (iso[0], iso[1])
    if period == "monthly":
        return (moment.year, moment.month)
    if period == "quarterly":
        return (moment.year, (moment.month - 1) // 3)
    return (moment.year,)


def retained_ids(points, policy):
    """Ids of POINTS (objects with ``id`` and ``moment``) that POLICY keeps.

    For each period with a count N, the newest restore point of each of the last N periods that
    have one is kept; the union of those is kept, and always the newest overall. Points with
    equal times are ordered by id (later id, newer). ``max_total`` then caps the kept set,
    dropping the oldest kept first.
    """
    newest_first = sorted(points, key=lambda point: (point.moment, point.id), reverse=True)
    if not newest_first:
        return set()
    kept = [newest_first[0]]
    for period in RETENTION_PERIODS:
        count = policy.get(period, 0)
        seen = set()
        for point in newest_first:
            if len(seen) >= count:
                break
            key = period_key(period, point.moment)
            if key not in seen:
                seen.add(key)
                kept.append(point)
    kept_ids = {point.id for point in kept}
    cap = policy.get("max_total")
    if cap is not None:
        ordered = [point.id for point in newest_first if point.id in kept_ids]
        kept_ids = set(ordered[:max(cap, 1)])
    return kept_ids


def btrfs_record_problem(record):
    """Why the recorded BTRFS snapshot RECORD (``{source, snapshot, directory}``) must not be deleted,
    judged from the record alone; None when its path is one this module could have made."""
    source, path, directory = (record.get(key) for key in ("source", "snapshot", "directory"))
    if not isinstance(directory, str):
        return f"{path!r} is recorded without its snapshot directory"
    if not isinstance(source, str):
        return f"{path!r} is recorded without its source subvolume"
    for value in (source, path, directory):
        if not value.startswith("/") or os.path.normpath(value) != value or "\x00" in value or "\n" in value:
            return f"{value!r} is not a normalised absolute path"
    if os.path.dirname(path) != directory:
        return f"{path} is not directly inside its snapshot directory {directory}"
    if not re.fullmatch(re.escape(os.path.basename(source)) + "@" + STAMP, os.path.basename(path)):
        return f"{path} is not named <subvolume>@<UTC time> after its source {source}"
    return None


def btrfs_plan(btrfs, subvolumes, snapshot_dir, moment):
    """The read-only snapshots to take of SUBVOLUMES: ``[{source, snapshot, directory}]``.

    Every source must be a subvolume and every target free, so a snapshot that cannot be taken
    is refused before anything changes. Directories are recorded as real paths (no symbolic
    links), which is what a later deletion checks them against.
    """
    stamp = moment.strftime(STAMP_FORMAT)
    planned = []
    for given in subvolumes:
        source = normalise_path(given, "btrfs_subvolumes")
        found = btrfs.inspect(source)
        if source == "/" or found.kind != "subvolume":
            raise SnapshotError(f"btrfs_subvolumes: {source} is not a BTRFS subvolume; create it with "
                                "opdbus.fleet.btrfs_subvolume, or fix the path")
        directory = os.path.realpath(normalise_path(snapshot_dir, "btrfs_snapshot_dir") if snapshot_dir
                                     else os.path.join(os.path.dirname(source), DEFAULT_BTRFS_DIR))
        # A snapshot can only be made on the filesystem of its source (a directory that does not
        # exist yet counts as the filesystem of its nearest existing parent).
        there = btrfs.inspect(directory)
        if there.mount is None or there.mount.fstype != "btrfs" or there.mount.device != found.mount.device:
            raise SnapshotError(f"btrfs_subvolumes: the snapshots of {source} would go to {directory}, which is not "
                                f"on the BTRFS filesystem of {source}; set btrfs_snapshot_dir to a directory on it")
        target = os.path.join(directory, f"{os.path.basename(source)}@{stamp}")
        if os.path.lexists(target) or any(item["snapshot"] == target for item in planned):
            raise SnapshotError(f"btrfs_subvolumes: {target} already exists (two subvolumes of the same name "
                                "snapshotted into one directory?); give them separate btrfs_snapshot_dir")
        planned.append({"source": source, "snapshot": target, "directory": directory})
    return planned


class SnapshotManager:
    """Takes, restores, prunes and deletes the restore points of one ledger, each operation in its
    own RecordedRun of APPLIER (an apply_engine.StateApplier) so that it is serialised with every
    other run on the host.

    BTRFS (a btrfs.BtrfsClient, or None where no BTRFS is used) takes and deletes the read-only
    BTRFS snapshots that a snapshot can take of given subvolumes.
    """

    def __init__(self, applier, btrfs=None):
        self.applier = applier
        self.ledger = applier.ledger
        self.store = BlobStore(self.ledger.directory)
        self.btrfs = btrfs
        self.runs = []
        self.notes = []  # warnings of this module's own, besides those of the runs

    @property
    def warnings(self):
        return [warning for run in self.runs for warning in run.warnings] + self.notes

    @property
    def interrupted(self):
        return [seq for run in self.runs for seq in run.interrupted]

    def _run(self, action, check_mode):
        run = self.applier.recorded_run(action, check_mode=check_mode)
        self.runs.append(run)
        return run

    def _verified_run(self, action, check_mode, purpose):
        """A run for a destructive step, after the ledger verified; refuses PURPOSE otherwise.

        Verified before the run starts, because starting it records the close of an interrupted
        earlier run, and a refusal must change nothing; and again in the run (``_verified_history``),
        since what the step acts on is what the ledger holds once this run has the lock.
        """
        self._verified_history(purpose)
        return self._run(action, check_mode)

    def _verified_history(self, purpose):
        """The history of a ledger that verifies; refuses PURPOSE (what the caller is about to do)."""
        with self.ledger.reading():
            verification = self.ledger.verify()
            entries = self.ledger.entries()
        if not verification["valid"]:
            problems = verification["problems"]
            listed = "; ".join(f"{problem['kind']} (seq {problem['seq']}): {problem['detail']}" for problem in problems[:3])
            raise SnapshotError(
                f"refusing to {purpose}: the ledger in {self.ledger.directory} does not verify, so what it records "
                f"cannot be acted on. {listed}. Nothing was changed; investigate with opdbus.fleet.opdbus_ledger_info "
                "and the checkpoint kept on the controller", problems=problems)
        return History(entries)

    # ---- take
    def take(self, names=None, label=None, btrfs_subvolumes=(), btrfs_snapshot_dir=None, check_mode=False):
        """Take a snapshot of the units NAMES (default: see ``units_to_snapshot``); returns result fields.

        With a LABEL that a live snapshot already has, nothing is taken: the label makes the task
        idempotent, as a playbook re-run expects. Without a label (and without BTRFS snapshots,
        whose content the ledger cannot see), a state equal to the newest live restore point's is
        not recorded again: the snapshot timer fires every few minutes on an unchanged host, and an
        entry each time would grow the ledger without bound. Its blob's modification time then says
        when the state was last confirmed (the guide's health check reads it). With
        BTRFS_SUBVOLUMES, the BTRFS snapshots to take are recorded as an intent first, then taken,
        then recorded with the snapshot.
        """
        for index, name in enumerate(names or []):
            problem = unit_name_problem(name)
            if problem:
                raise SnapshotError(f"units[{index}]: {name!r}: {problem}")
        with self._run("snapshot", check_mode) as run:
            if label is not None:
                found = History(self.ledger.entries()).labelled(label)
                if found is not None:
                    return {"changed": False, "snapshot": found.as_dict(self.store), "entry": None, "unchanged": False}
            units = self.units_to_snapshot(names)
            document = snapshot_document(units)
            digest = hashlib.sha256(canonical_json(document)).hexdigest()
            if label is None and not btrfs_subvolumes:
                held = self._newest_point_holding(digest, check_mode)
                if held is not None:
                    return {"changed": False, "snapshot": held.as_dict(self.store), "entry": None, "unchanged": True}
            planned = btrfs_plan(self.btrfs, btrfs_subvolumes, btrfs_snapshot_dir, utc_now()) if btrfs_subvolumes else []
            if check_mode:
                return {"changed": True, "snapshot": None, "entry": None, "unchanged": False}
            if planned:
                run.intend([{"action": "btrfs_snapshot", "path": item["snapshot"], "source": item["source"]}
                            for item in planned])
            taken = self._take_btrfs(planned, run.progress)
            new_blob = not self.store.exists(digest)
            try:
                digest = self.store.put(document)
            except OSError as error:
                raise host_file_error("write the snapshot blob in", self.store.directory, error) from None
            try:
                entry = run.record({"units": len(units), "label": label, "btrfs": taken}, state_sha256=digest)
            except OpdbusError:
                # A ledger that refuses the entry (damaged, full) must not be left a blob nothing names.
                if new_blob:
                    self.store.delete(digest)
                raise
        point = RestorePoint.from_entry(entry)[0]
        return {"changed": True, "snapshot": point.as_dict(self.store), "entry": entry, "unchanged": False}

    def _newest_point_holding(self, digest, check_mode):
        """The newest live restore point, when its state is DIGEST and its blob still holds it (a
        damaged blob is no restore point: the snapshot is taken again and writes it anew); outside
        check mode its blob's modification time becomes now."""
        points = History(self.ledger.entries()).points()
        newest = max(points, key=lambda point: (point.moment, point.id), default=None)
        if newest is None or newest.digest != digest:
            return None
        try:
            self.store.read(digest)
        except BlobProblem:
            return None
        if not check_mode:
            try:
                os.utime(self.store.path(digest))
            except OSError as error:
                raise host_file_error("touch the snapshot blob in", self.store.directory, error) from None
        return newest

    def units_to_snapshot(self, names):
        """``{name: UnitStatus}`` of NAMES; else of the units the state file declares; else of
        every unit a restore can bring back (``SystemdClient.restorable_units``)."""
        client = self.applier.client
        if names:
            return client.read_units(list(names))
        declared = declared_units(self.applier.state_file)
        if declared is not None:
            return client.read_units(list(declared))
        return client.restorable_units()

    def _take_btrfs(self, planned, progress):
        """Take the PLANNED BTRFS snapshots; on any failure, delete those taken and re-raise.

        PROGRESS (the run's) always lists the snapshots that exist, so a failure outcome says
        what is left if even the undo failed.
        """
        taken = progress.setdefault("btrfs", [])
        try:
            for item in planned:
                try:
                    make_directories(item["directory"], 0o700)
                except OSError as error:
                    raise host_file_error("create", item["directory"], error) from None
                self.btrfs.snapshot(item["source"], item["snapshot"], read_only=True)
                taken.append(item)
        except BaseException:
            undone = progress.setdefault("undone", [])
            for item in reversed(list(taken)):
                try:
                    self.btrfs.delete(item["snapshot"])
                except OpdbusError:
                    continue
                taken.remove(item)
                undone.append(item["snapshot"])
            raise
        return taken

    def pending_point(self):
        """The restore point a check-mode ``take`` stands for, so that a prune in the same check
        run predicts the real one (the new snapshot is the newest: it changes what is kept)."""
        return RestorePoint(self.ledger.checkpoint()["size"], "snapshot", None, utc_now(), None)

    # ---- remove
    def prune(self, policy, check_mode=False, pending=None):
        """Apply a validated retention POLICY to every live restore point; returns result fields.

        Also deletes what earlier removals left on disk and blobs that no live restore point names.
        """
        with self._verified_run("prune", check_mode, "prune") as run:
            history = self._verified_history("prune")
            points = history.points()
            kept = retained_ids(points + ([pending] if pending else []), policy)
            removed = [point for point in points if point.id not in kept]
            return self._remove(run, history, removed, {"policy": policy}, check_mode, orphans=True)

    def delete(self, wanted, check_mode=False):
        """Delete the restore point WANTED; an id that is already removed is no change."""
        purpose = f"delete restore point {wanted}"
        with self._verified_run("delete_snapshot", check_mode, purpose) as run:
            history = self._verified_history(purpose)
            point = history.find(wanted, removed_ok=True)
            result = self._remove(run, history, [point] if point else [], {}, check_mode, orphans=False)
        result["restore_point"] = result["removed"][0] if result["removed"] else None
        return result

    def _remove(self, run, history, removed, extra, check_mode, orphans):
        """Remove the restore points REMOVED: record the removal, then delete what goes.

        What goes: the BTRFS snapshots of REMOVED and of earlier removed points that are still
        on disk, and the blobs of those that no live restore point shares (with ORPHANS, every
        blob no live restore point names). Every path is checked before the entry is appended,
        and the entry lists exactly what is then deleted, so a removal killed half-way is finished
        by the next one (which names it under ``resumes``).
        """
        gone = {point.id for point in removed}
        kept_digests = {point.digest for point in history.points() if point.id not in gone}
        leftovers = list(history.removed.values())
        self.store.check_directory()
        on_disk = set(self.store.digests())
        candidates = on_disk if orphans else ({point.digest for point in removed}
                                              | {point.digest for point, _removed_by in leftovers})
        blobs = sorted((candidates & on_disk) - kept_digests)
        resumes = {seq for point, seq in leftovers if point.digest in blobs}
        btrfs, unsafe = [], []
        for point, removed_by in [(point, None) for point in removed] + leftovers:
            for record in point.btrfs:
                path = record["snapshot"]
                if not os.path.lexists(path):
                    continue  # deleted by hand, or by an earlier removal: gone either way
                problem = btrfs_record_problem(record) or self._btrfs_disk_problem(record)
                if problem:
                    unsafe.append(f"restore point {point.id}: {problem}")
                    continue
                btrfs.append(path)
                if removed_by is not None:
                    resumes.add(removed_by)
        if unsafe:
            raise SnapshotError("refusing to delete BTRFS snapshots that the ledger records where this module puts "
                                "none: " + "; ".join(unsafe) + ". Nothing was changed; investigate (the ledger may have "
                                "been rewritten: check it against the checkpoint kept on the controller)", unsafe=unsafe)
        # A record that names no path cannot be deleted; say so rather than leave it unnoticed.
        self.notes += [f"{note['detail']} (removed all the same)" for note in history.notes if note["seq"] in gone]
        result = {"changed": bool(removed or blobs or btrfs), "removed": [point.as_dict(self.store) for point in removed],
                  "deleted": {"blobs": blobs, "btrfs": btrfs}, "entry": None}
        if check_mode or not result["changed"]:
            return result
        changes = dict(extra, removed=sorted(gone), blobs=blobs, btrfs=btrfs)
        if resumes:
            changes["resumes"] = sorted(resumes)
        entry = result["entry"] = run.record(changes)
        try:
            for path in btrfs:
                self.btrfs.delete(path)
            for digest in blobs:
                self.store.delete(digest)
        except OpdbusError as error:
            details = dict(result)
            details["changed"] = True
            raise SnapshotError(f"entry {entry['seq']} records this {entry['action']}, but deleting what it removes "
                                f"failed: {error}. The next prune or delete deletes what is left", **details) from None
        return result

    def _btrfs_disk_problem(self, record):
        """Why the BTRFS snapshot of RECORD, which exists, must not be deleted, from what is on disk."""
        directory, path = record["directory"], record["snapshot"]
        if os.path.realpath(directory) != directory:
            return f"the path to {directory} now passes through a symbolic link"
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return f"{path} is not a directory (a symbolic link or a file)"
        if self.btrfs.inspect(path).kind != "subvolume":
            return f"{path} is not a BTRFS subvolume"
        return None

    # ---- restore
    def restore(self, wanted, check_mode=False):
        """Bring the units back to restore point WANTED through the apply engine.

        Returns ``(result fields, failed units)``. A blob whose content does not match its digest
        is refused before anything is touched.
        """
        purpose = f"restore {wanted}"
        with self._verified_run("rollback", check_mode, purpose) as run:
            point = self._verified_history(purpose).find(wanted)
            try:
                document = self.store.get(point.digest)
            except BlobProblem as problem:
                raise SnapshotError(f"cannot restore {point.kind} {point.id}: {problem}; nothing was changed") from None
            if check_mode:
                result = self.applier.check(document, persist=False)
            else:
                result = self.applier.apply(document, run, persist=False, ledger_extra={"restored": {
                    "id": point.id, "kind": point.kind, "state_sha256": point.digest}})
        fields = {
            "changed": result.changed, "restore_point": point.as_dict(self.store), "actions": result.actions,
            "absent": result.absent, "conditions_unmet": result.conditions_unmet,
            "units": {name: unit.as_dict() for name, unit in result.units.items()}, "diff": result.diff(),
            "entry": result.entry,
        }
        return fields, result.failures


def declared_units(path):
    """The units the state document at PATH declares, or None when there is no such file."""
    if not path or not os.path.lexists(path):
        return None
    return validate(load_document(path, option="state_file"))


def ledger_info_task(params, check_mode, context):
    """opdbus_ledger_info: the ledger verified, its entries and restore points; an invalid ledger fails
    the task (with everything but the entries) unless ``fail_on_invalid`` is false."""
    if params["limit"] is not None and params["limit"] < 0:
        raise LedgerError("limit must be 0 or more, not %d" % params["limit"])
    result, warnings = ledger_report(params["path"], params["anchor"], params["since"], params["limit"])
    for warning in warnings:
        context.warn(warning)
    if not result["valid"] and params["fail_on_invalid"]:
        failure = {key: value for key, value in result.items() if key != "entries"}
        raise TaskFailed("the ledger in %s failed verification: %s" % (params["path"], describe_problem(result["problems"][0])),
                         **failure)
    return result


def describe_problem(problem):
    """A verification problem in words, for the failure message."""
    if problem["seq"] is not None:
        where = "at seq %d" % problem["seq"]
    elif "anchor" in problem["kind"]:
        where = "against the anchor"
    else:
        where = "in head.json"
    return "%s %s: %s" % (problem["kind"], where, problem["detail"])


def ledger_report(directory, anchor=None, since=None, limit=None):
    """What opdbus_ledger_info returns: ``(result fields, warnings)``.

    The ledger's own verification, plus each live restore point's blob: present, and
    hashing to its ``state_sha256``. Restore points that a prune or delete removed are counted
    under ``pruned``; their blobs are meant to be gone.
    """
    ledger = Ledger(directory)
    with ledger.reading():
        verification = ledger.verify(anchor=anchor)
        entries = ledger.entries()
    history = History(entries)
    store = BlobStore(ledger.directory)
    warnings = []
    blob_problems = check_blobs(store, history.points(), warnings)
    if blob_problems:
        # A prune deletes blobs after appending its entry, and may have done both since the read
        # above: a restore point it removed has lost its blob as intended, which is no problem.
        still_live = History(ledger.entries()).live
        blob_problems = [problem for problem in blob_problems if problem["seq"] in still_live]
    problems = (verification["problems"]
                + [dict(note, kind="bad_record") for note in history.notes]
                + blob_problems)
    result = dict(
        entries=select_entries(entries, since, limit),
        restore_points=[point.as_dict(store) for point in history.points()],
        pruned=len(history.removed),
        checkpoint=verification["checkpoint"],
        valid=not problems,
        problems=problems,
        recoverable=verification["recoverable"],
        interrupted=verification["interrupted"],
        in_progress=verification.get("in_progress"),
        anchor_checked=anchor is not None,
    )
    if "anchor_proof" in verification:
        result["anchor_proof"] = verification["anchor_proof"]
    return result, warnings


def check_blobs(store, points, warnings):
    """Problems (``{seq, kind, detail}``) of the blobs of POINTS, one per damaged or missing blob,
    at the oldest restore point that uses it. Without zstandard only presence can be checked,
    which WARNINGS then say."""
    users = {}
    for point in points:
        users.setdefault(point.digest, []).append(point)
    if zstandard is None:
        warnings.append("python3-zstandard is not installed on the host: restore point blobs were checked "
                        "for presence only, not for their content")
    problems = []
    for digest, using in users.items():
        try:
            if zstandard is None:
                if not store.exists(digest):
                    raise BlobProblem("blob_missing", f"{store.path(digest)} is missing")
            else:
                store.read(digest)
        except BlobProblem as problem:
            named = ", ".join(f"{point.id} ({point.kind})" for point in using[:10])
            more = f" and {len(using) - 10} more" if len(using) > 10 else ""
            problems.append({"seq": using[0].id, "kind": problem.kind,
                             "detail": f"{problem}; restore point(s) {named}{more} cannot be restored"})
    return sorted(problems, key=lambda problem: problem["seq"])
