# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""State snapshots: a content-addressed blob store, the snapshot history kept in the ledger, and retention.

A snapshot is a desired state document describing units as they were (so restoring it is an
ordinary apply), stored once per distinct content as ``snapshots/<sha256>.json.zst``: zstd over
the canonical JSON, named by the SHA-256 of the uncompressed bytes, so deleting a blob never
changes a ledger hash. The history lives in the ledger itself: a ``snapshot`` entry records one
(its ``seq`` is the snapshot's id, ``state_sha256`` its blob), and ``prune`` and
``delete_snapshot`` entries record which ids went. Nothing else holds state.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import traceback

from ansible_collections.opdbus.fleet.plugins.module_utils.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils.files import atomic_write, make_directories
from ansible_collections.opdbus.fleet.plugins.module_utils.ledger import canonical_json
from ansible_collections.opdbus.fleet.plugins.module_utils.state_document import snapshot_document

try:
    import zstandard
except ImportError:
    zstandard = None
    ZSTANDARD_IMPORT_ERROR = traceback.format_exc()
else:
    ZSTANDARD_IMPORT_ERROR = None

SNAPSHOT_DIR = "snapshots"
BLOB_SUFFIX = ".json.zst"
ZSTD_LEVEL = 19  # documents are small and written rarely: spend CPU on size
RETENTION_PERIODS = ("hourly", "daily", "weekly", "monthly", "quarterly", "yearly")
RETENTION_KEYS = RETENTION_PERIODS + ("max_total",)


class SnapshotError(OpdbusError):
    """A snapshot operation that cannot proceed; the message names what to fix."""


# ------------------------------------------------------------------------------ blob store

class BlobStore:
    """zstd-compressed canonical JSON documents named by the SHA-256 of their uncompressed bytes."""

    def __init__(self, ledger_dir):
        self.directory = os.path.join(ledger_dir, SNAPSHOT_DIR)

    def path(self, digest):
        return os.path.join(self.directory, digest + BLOB_SUFFIX)

    def size(self, digest):
        try:
            return os.path.getsize(self.path(digest))
        except OSError:
            return None

    def put(self, document):
        """Store DOCUMENT (once per content); returns its digest."""
        raw = canonical_json(document)
        digest = hashlib.sha256(raw).hexdigest()
        if not os.path.exists(self.path(digest)):
            atomic_write(self.path(digest), zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw), 0o600,
                         directory_mode=0o700)
        return digest

    def get(self, digest):
        """The document stored under DIGEST, after checking that its content still has that digest."""
        path = self.path(digest)
        try:
            with open(path, "rb") as handle:
                compressed = handle.read()
        except FileNotFoundError:
            raise SnapshotError(f"snapshot blob {path} is missing (pruned or deleted)") from None
        try:
            raw = zstandard.ZstdDecompressor().decompress(compressed)
        except zstandard.ZstdError as error:
            raise SnapshotError(f"snapshot blob {path} is corrupted: not zstd data ({error})") from None
        actual = hashlib.sha256(raw).hexdigest()
        if actual != digest:
            raise SnapshotError(f"snapshot blob {path} is corrupted: its content hashes to {actual}, "
                                f"not {digest}; refusing to restore it")
        return json.loads(raw.decode("utf-8"))

    def delete(self, digest):
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------------------ history

class Snapshot:
    __slots__ = ("id", "time", "digest", "label", "units", "btrfs")

    def __init__(self, entry):
        changes = entry["changes"]
        self.id = entry["seq"]
        self.time = entry["time"]
        self.digest = entry["state_sha256"]
        self.label = changes.get("label")
        self.units = changes.get("units", 0)
        self.btrfs = changes.get("btrfs", [])

    @property
    def moment(self):
        return parse_time(self.time)

    def as_dict(self, store):
        return {"id": self.id, "time": self.time, "digest": self.digest, "label": self.label,
                "units": self.units, "btrfs": self.btrfs, "size": store.size(self.digest)}


def live_snapshots(entries):
    """Snapshots that are neither pruned nor deleted, oldest first, from the ledger's ENTRIES."""
    snapshots = {}
    for entry in entries:
        changes = entry.get("changes")
        if not isinstance(changes, dict):
            continue  # not written by this module (the ledger records other actions too)
        action = entry.get("action")
        if action == "snapshot" and isinstance(entry.get("state_sha256"), str):
            snapshots[entry["seq"]] = Snapshot(entry)
        elif action in ("prune", "delete_snapshot"):
            for snapshot_id in changes.get("removed", []):
                snapshots.pop(snapshot_id, None)
    return [snapshots[key] for key in sorted(snapshots)]


def find_snapshot(snapshots, wanted):
    """The snapshot named by WANTED: an id, ``latest`` or ``previous`` (the one before the latest)."""
    if wanted in ("latest", "previous"):
        position = -1 if wanted == "latest" else -2
        if len(snapshots) < -position:
            raise SnapshotError(f"there is no {wanted} snapshot: the history holds {len(snapshots)}")
        return snapshots[position]
    try:
        number = int(wanted)
    except (TypeError, ValueError):
        raise SnapshotError(f"id must be a snapshot id (a number), latest or previous, not {wanted!r}") from None
    for snapshot in snapshots:
        if snapshot.id == number:
            return snapshot
    known = ", ".join(str(snapshot.id) for snapshot in snapshots[-10:]) or "none"
    raise SnapshotError(f"no snapshot with id {number} (newest ids: {known})")


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


# ------------------------------------------------------------------------------ retention

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
                            + " (without one, pruning would keep only the newest snapshot)")
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


def retained_ids(snapshots, policy):
    """Ids of SNAPSHOTS (objects with ``id`` and ``moment``) that POLICY keeps.

    For each period with a count N, the newest snapshot of each of the last N periods that have a
    snapshot is kept; the union of those is kept, and always the newest snapshot overall. Snapshots
    with equal times are ordered by id (later id, newer). ``max_total`` then caps the kept set,
    dropping the oldest kept first.
    """
    newest_first = sorted(snapshots, key=lambda snapshot: (snapshot.moment, snapshot.id), reverse=True)
    if not newest_first:
        return set()
    kept = [newest_first[0]]
    for period in RETENTION_PERIODS:
        count = policy.get(period, 0)
        seen = set()
        for snapshot in newest_first:
            if len(seen) >= count:
                break
            key = period_key(period, snapshot.moment)
            if key not in seen:
                seen.add(key)
                kept.append(snapshot)
    kept_ids = {snapshot.id for snapshot in kept}
    cap = policy.get("max_total")
    if cap is not None:
        ordered = [snapshot.id for snapshot in newest_first if snapshot.id in kept_ids]
        kept_ids = set(ordered[:max(cap, 1)])
    return kept_ids


# ------------------------------------------------------------------------------ operations

class SnapshotManager:
    """Takes, prunes, deletes and restores snapshots of one ledger.

    A snapshot can also take read-only BTRFS snapshots of given subvolumes (through BTRFS, a
    btrfs.BtrfsClient, which runs nothing unless used); they are recorded in its ledger entry,
    and pruning or deleting the snapshot deletes them.
    """

    def __init__(self, applier, btrfs):
        self.applier = applier
        self.ledger = applier.ledger
        self.store = BlobStore(self.ledger.directory)
        self.btrfs = btrfs

    def history(self):
        return live_snapshots(self.ledger.entries())

    # ---- take
    def take(self, units, label=None, btrfs_subvolumes=(), btrfs_snapshot_dir=None, check_mode=False):
        """Snapshot UNITS ({name: UnitStatus}); returns ``(snapshot dict or None, ledger entry or None)``.

        With a LABEL that a live snapshot already has, nothing is taken: the label makes the
        task idempotent, as a playbook re-run expects.
        """
        if label is not None:
            for snapshot in self.history():
                if snapshot.label == label:
                    return snapshot.as_dict(self.store), None
        if check_mode:
            return None, None
        digest = self.store.put(snapshot_document(units))
        taken = []
        try:
            self._btrfs_snapshots(btrfs_subvolumes, btrfs_snapshot_dir, taken)
            entry = self.ledger.append("snapshot", {"units": len(units), "label": label, "btrfs": taken},
                                       state_sha256=digest, actor=self.applier.actor)
        except BaseException:
            # No snapshot without its ledger entry: undo the BTRFS snapshots taken so far.
            for item in taken:
                self.btrfs.delete(item["snapshot"])
            raise
        return Snapshot(entry).as_dict(self.store), entry

    def _btrfs_snapshots(self, subvolumes, snapshot_dir, taken):
        """Take a read-only snapshot of each subvolume, appending each one taken to TAKEN."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        for source in subvolumes:
            directory = snapshot_dir or os.path.join(os.path.dirname(source.rstrip("/")), "@snapshots")
            target = os.path.join(directory, f"{os.path.basename(source.rstrip('/'))}@{stamp}")
            make_directories(directory, 0o700)
            self.btrfs.snapshot(source, target, read_only=True)
            taken.append({"source": source, "snapshot": target})

    # ---- remove
    def prune(self, policy, check_mode=False):
        """Apply a validated retention POLICY; returns ``(removed snapshot dicts, entry or None)``."""
        snapshots = self.history()
        kept = retained_ids(snapshots, policy)
        return self._remove([s for s in snapshots if s.id not in kept], snapshots, "prune",
                            {"policy": policy}, check_mode)

    def delete(self, wanted, check_mode=False):
        snapshots = self.history()
        target = find_snapshot(snapshots, wanted)
        return self._remove([target], snapshots, "delete_snapshot", {}, check_mode)

    def _remove(self, removed, snapshots, action, extra, check_mode):
        if not removed:
            return [], None
        described = [snapshot.as_dict(self.store) for snapshot in removed]
        if check_mode:
            return described, None
        gone = {snapshot.id for snapshot in removed}
        # Blobs are shared by identical states: a blob goes only with the last snapshot using it.
        still_used = {snapshot.digest for snapshot in snapshots if snapshot.id not in gone}
        blobs = sorted({snapshot.digest for snapshot in removed} - still_used)
        subvolumes = [item["snapshot"] for snapshot in removed for item in snapshot.btrfs]
        for path in subvolumes:
            if os.path.lexists(path):  # someone may have deleted it by hand: it is gone either way
                self.btrfs.delete(path)
        for digest in blobs:
            self.store.delete(digest)
        changes = dict(extra, removed=sorted(gone), blobs=blobs, btrfs=subvolumes)
        entry = self.ledger.append(action, changes, actor=self.applier.actor)
        return described, entry

    # ---- restore
    def restore(self, wanted, check_mode=False):
        """Bring the units back to snapshot WANTED through the apply engine.

        Returns ``(snapshot dict, ApplyResult, entry or None)``; a blob whose content does not
        match its digest is refused before anything is touched.
        """
        snapshot = find_snapshot(self.history(), wanted)
        document = self.store.get(snapshot.digest)
        if check_mode:
            return snapshot.as_dict(self.store), self.applier.check(document), None
        result, entry = self.applier.apply(document, ledger_action="rollback",
                                           ledger_extra={"snapshot": snapshot.id, "snapshot_sha256": snapshot.digest})
        return snapshot.as_dict(self.store), result, entry
