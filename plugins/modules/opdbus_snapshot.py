#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_snapshot
short_description: Take, restore, prune and delete restore points of systemd state, recorded in the ledger
version_added: 0.1.0
description:
  - A restore point is a ledger entry that names a stored state. Every snapshot this module takes is
    one, and so is every C(apply) (M(opdbus.fleet.opdbus_state)) and C(rollback) entry that changed
    something, since the apply engine stores the state each changing run leaves. Its id is the C(seq)
    of its entry.
    States are stored zstd-compressed under the SHA-256 of their content in C(snapshots/) of the
    ledger directory, so identical states are stored once.
  - V(present) takes a snapshot of the live state of systemd units (running, enabled, masked) as a
    desired state document, and records it as a C(snapshot) ledger entry.
  - V(restored) brings the units back to the restore point O(id) through the same apply engine as
    M(opdbus.fleet.opdbus_state), with check and diff mode, and records a C(rollback) entry that names
    the restore point. A restore point whose stored content no longer matches its digest is refused.
  - V(pruned) applies a retention policy to all restore points (snapshots and applies alike) and
    records one C(prune) entry listing what goes, before deleting it; V(absent) deletes one restore
    point and records a C(delete_snapshot) entry. Blobs shared with kept restore points stay. A prune
    also deletes what an interrupted earlier prune or delete left on disk, and blobs that no live
    restore point names. The ledger still verifies afterwards, since no entry changes.
  - V(restored), V(pruned) and V(absent) first verify the ledger and refuse, changing nothing, when
    it does not verify; they delete only blob files named by valid digests and BTRFS snapshots that
    sit directly in the snapshot directory recorded with them (see C(docs/snapshots.md)).
  - Optionally, a snapshot also takes read-only BTRFS snapshots of given subvolumes; pruning or
    deleting the snapshot deletes them.
author:
  - opdbus.fleet developers (@opdbus)
extends_documentation_fragment:
  - opdbus.fleet.systemd
  - opdbus.fleet.apply
  - opdbus.fleet.ledger
  - opdbus.fleet.ledger.write_ahead
options:
  state:
    description:
      - V(present) takes a snapshot (and then prunes, if O(retention) is set).
      - V(restored) restores the restore point O(id).
      - V(pruned) applies O(retention).
      - V(absent) deletes the restore point O(id); an id that is already pruned or deleted is no change.
    type: str
    choices: [present, restored, pruned, absent]
    default: present
  id:
    description:
      - The restore point to restore or delete, by id (the C(seq) of its C(snapshot), C(apply) or
        C(rollback) ledger entry, as M(opdbus.fleet.opdbus_ledger_info) lists them in its
        RV(opdbus.fleet.opdbus_ledger_info#module:restore_points)), or V(latest) (the newest snapshot),
        or V(previous) (the snapshot before it).
      - V(latest) and V(previous) name snapshots only, as they always have; to go back to the state
        an apply left, give that apply's C(seq).
    type: str
  label:
    description:
      - A label for a new snapshot. When a snapshot with this label exists, none is taken and the
        task reports no change, so a labelled snapshot is taken once however often the task runs.
    type: str
  units:
    description:
      - Units to snapshot. Defaults to the units declared in O(state_file) when it exists, else
        every unit a restore can bring back, that is, loaded units that have unit files (no scopes,
        slices, devices, transient, generated, alias or not-found units).
    type: list
    elements: str
  retention:
    description:
      - How many restore points to keep. For each period with a count N, the newest restore point of
        each of the last N periods that have one is kept; the newest restore point is always kept.
        Periods are UTC; weeks are ISO weeks (with their ISO year).
      - Its keys are C(hourly), C(daily), C(weekly) (ISO weeks), C(monthly), C(quarterly) and
        C(yearly), each a number of periods to keep a restore point for, and C(max_total), at most
        this many restore points in all (the oldest kept go first). Each is a whole number of 0 or
        more; an unknown key or another value is refused with a message that names it.
      - At least one period count must be set.
    type: dict
  btrfs_subvolumes:
    description:
      - Subvolumes of which each new snapshot also takes a read-only BTRFS snapshot, named
        C(<subvolume>@<UTC time>).
    type: list
    elements: path
    default: []
  btrfs_snapshot_dir:
    description:
      - Where the BTRFS snapshots go; it must be on the same filesystem as the subvolumes.
      - Defaults to C(@snapshots) next to each subvolume (the layout of the netboot install).
    type: path
attributes:
  check_mode:
    support: full
    description: Reports what would be taken, restored, pruned or deleted (the same RV(removed),
      RV(deleted), RV(actions) and diff as the real run); nothing changes.
  diff_mode:
    support: full
    description: For V(restored), each unit's state before and after, as M(opdbus.fleet.opdbus_state) shows it.
requirements:
  - zstandard on the managed host (C(python3-zstandard))
  - btrfs-progs on the managed host when O(btrfs_subvolumes) is used
notes:
  - A snapshot without O(label) or O(btrfs_subvolumes) of a state equal to the newest restore
    point's (a snapshot's or an apply's) records nothing and reports no change, with
    RV(unchanged) true and that restore point in RV(snapshot); its blob's modification time
    becomes the time of this confirmation. A timer that snapshots an unchanged host every few
    minutes so adds nothing to the ledger. A labelled snapshot is always taken (once per label).
  - A restore brings the units back without writing O(state_file) or C(state/current.json), which
    hold the desired document; a later apply of that document brings the declared units back to
    their declaration. To keep a rollback, change the document too.
seealso:
  - module: opdbus.fleet.opdbus_state
"""

EXAMPLES = r"""
- name: Snapshot the declared units before a change, once per release
  opdbus.fleet.opdbus_snapshot:
    label: before-release-42

- name: Take an hourly snapshot and keep the laptop profile's history
  opdbus.fleet.opdbus_snapshot:
    retention: {hourly: 5, daily: 3, weekly: 2, quarterly: 2}

- name: Roll back to the snapshot before the latest
  opdbus.fleet.opdbus_snapshot:
    state: restored
    id: previous

- name: Find the apply before the last one
  opdbus.fleet.opdbus_ledger_info:
    limit: 0
    query: "restore_points[?kind=='apply'] | [-2].id"
  register: before_last_apply

- name: Go back to the state that apply left
  opdbus.fleet.opdbus_snapshot:
    state: restored
    id: "{{ before_last_apply.query_result }}"

- name: Snapshot state and the state subvolume together
  opdbus.fleet.opdbus_snapshot:
    btrfs_subvolumes: [/mnt/pool/@state]
"""

RETURN = r"""
snapshot:
  description:
    - The snapshot taken, or found by O(label), or the newest restore point when the state is
      unchanged since it (see RV(unchanged)); V(null) when check mode would take one.
    - Shaped as RV(restore_point).
  returned: when O(state=present)
  type: dict
  sample: {id: 17, kind: snapshot, time: "2026-11-22T10:00:00.000000Z", digest: 3f5c..., label: null, units: 4,
           size: 212, btrfs: []}
unchanged:
  description: Whether the state equals the newest restore point's, so that nothing was (or would be) recorded.
  returned: when O(state=present)
  type: bool
restore_point:
  description:
    - The restore point restored, or deleted (V(null) when O(id) names one already removed).
    - C(kind) is C(snapshot), C(apply) or C(rollback); C(units) counts the units of a snapshot (V(null)
      for the others); C(btrfs) lists the BTRFS snapshots taken with a snapshot, each with C(source),
      C(snapshot) and C(directory); C(size) is the bytes of its blob on disk.
  returned: when O(state) is V(restored) or V(absent)
  type: dict
  sample: {id: 12, kind: apply, time: "2026-11-22T09:00:00.000000Z", digest: 3f5c..., label: null, units: null,
           size: 212, btrfs: []}
removed:
  description: Restore points pruned or deleted (in check mode, that would be), shaped as RV(restore_point).
  returned: when O(state) is V(pruned) or V(absent), or V(present) with O(retention)
  type: list
  elements: dict
deleted:
  description:
    - What the removal deletes (in check mode, would delete), as its ledger entry lists it.
    - C(blobs) are digests of stored states no kept restore point uses (including any left by an
      interrupted earlier removal, and, for a prune, any no live restore point names); C(btrfs) are
      paths of BTRFS snapshots.
  returned: when O(state) is V(pruned) or V(absent), or V(present) with O(retention)
  type: dict
  sample: {blobs: ["3f5c..."], btrfs: ["/mnt/pool/@snapshots/@state@20261122T100000.000000Z"]}
actions:
  description: For V(restored), the unit actions that ran (or would run), as M(opdbus.fleet.opdbus_state) returns them.
  returned: when O(state=restored)
  type: list
  elements: dict
absent:
  description: For V(restored), units of the restore point that are not installed and hold its state as they are.
  returned: when O(state=restored)
  type: list
  elements: str
conditions_unmet:
  description: For V(restored), units to be started whose start systemd skips because of unmet C(Condition*=) settings.
  returned: when O(state=restored)
  type: dict
units:
  description: For V(restored), the live state of the restore point's units afterwards.
  returned: when O(state=restored)
  type: dict
failed_units:
  description: For V(restored), units that did not reach the restore point's state, with the reason.
  returned: when a unit failed
  type: dict
interrupted:
  description: Seqs of intents of interrupted runs, as in RV(opdbus.fleet.opdbus_state#module:interrupted).
  returned: always
  type: list
  elements: int
entry:
  description: The last ledger entry this run appended, or V(null).
  returned: always
  type: dict
checkpoint:
  description: The ledger checkpoint after the run.
  returned: always
  type: dict
timing:
  description: Time spent inside the module, in milliseconds.
  returned: always
  type: dict
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec, apply_spec, scope_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshot_task import snapshot_task


def main():
    spec = scope_spec().merge(apply_spec(), ArgumentSpec(
        dict(
            state=dict(type="str", choices=["present", "restored", "pruned", "absent"], default="present"),
            id=dict(type="str"),
            label=dict(type="str"),
            units=dict(type="list", elements="str"),
            # Checked by validate_retention (naming the key), not with suboptions: ansible-core crashes
            # on a suboption spec given a value that is not a mapping.
            retention=dict(type="dict"),
            btrfs_subvolumes=dict(type="list", elements="path", default=[]),
            btrfs_snapshot_dir=dict(type="path"),
        ),
        required_if=[("state", "restored", ["id"]), ("state", "absent", ["id"]), ("state", "pruned", ["retention"])],
    ))
    run_module(spec, snapshot_task, needs=("dbus", "zstandard"), timed=True)


if __name__ == "__main__":
    main()
