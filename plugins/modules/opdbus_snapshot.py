#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_snapshot
short_description: Take, restore, prune and delete snapshots of systemd state, recorded in the ledger
version_added: 0.1.0
description:
  - V(present) takes a snapshot of the live state of systemd units (running, enabled, masked) as a
    desired state document, stored zstd-compressed under the SHA-256 of its content in
    C(snapshots/) of the ledger directory (identical states are stored once), and records it as a
    C(snapshot) ledger entry whose C(seq) is the snapshot's id.
  - V(restored) brings the units back to a snapshot through the same apply engine as
    M(opdbus.fleet.opdbus_state), with check and diff mode, and records a C(rollback) entry that
    names the snapshot. A snapshot whose stored content no longer matches its digest is refused.
  - V(pruned) applies a retention policy and records one C(prune) entry listing what went;
    V(absent) deletes one snapshot and records a C(delete_snapshot) entry. Blobs shared with kept
    snapshots stay. The ledger still verifies afterwards, since no entry changes.
  - Optionally, a snapshot also takes read-only BTRFS snapshots of given subvolumes; pruning or
    deleting the snapshot deletes them.
author:
  - opdbus.fleet developers (@opdbus)
extends_documentation_fragment:
  - opdbus.fleet.systemd
  - opdbus.fleet.apply
  - opdbus.fleet.ledger
options:
  state:
    description:
      - V(present) takes a snapshot (and then prunes, if O(retention) is set).
      - V(restored) restores the snapshot O(id).
      - V(pruned) applies O(retention).
      - V(absent) deletes the snapshot O(id).
    type: str
    choices: [present, restored, pruned, absent]
    default: present
  id:
    description:
      - The snapshot to restore or delete, by id (the C(seq) of its ledger entry),
        or V(latest), or V(previous) (the one before the latest).
    type: str
  label:
    description:
      - A label for a new snapshot. When a snapshot with this label exists, none is taken and the
        task reports no change, so a labelled snapshot is taken once however often the task runs.
    type: str
  units:
    description:
      - Units to snapshot. Defaults to the units declared in O(state_file) when it exists, else
        every unit systemd knows.
    type: list
    elements: str
  retention:
    description:
      - How many snapshots to keep. For each period with a count N, the newest snapshot of each of
        the last N periods that have a snapshot is kept; the newest snapshot is always kept.
        Periods are UTC; weeks are ISO weeks (with their ISO year).
      - At least one period count must be set.
    type: dict
    suboptions:
      hourly: {description: Hours to keep a snapshot for., type: int}
      daily: {description: Days to keep a snapshot for., type: int}
      weekly: {description: ISO weeks to keep a snapshot for., type: int}
      monthly: {description: Months to keep a snapshot for., type: int}
      quarterly: {description: Quarters to keep a snapshot for., type: int}
      yearly: {description: Years to keep a snapshot for., type: int}
      max_total: {description: At most this many snapshots in all (the oldest kept go first)., type: int}
  btrfs_subvolumes:
    description:
      - Subvolumes of which each new snapshot also takes a read-only BTRFS snapshot.
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
    description: Reports what would be taken, restored, pruned or deleted; nothing changes.
  diff_mode:
    support: full
    description: For V(restored), each unit's state before and after, as M(opdbus.fleet.opdbus_state) shows it.
requirements:
  - zstandard on the managed host (C(python3-zstandard))
  - btrfs-progs on the managed host when O(btrfs_subvolumes) is used
notes:
  - Taking a snapshot without O(label) is a change every time, like any backup.
seealso:
  - module: opdbus.fleet.opdbus_state
  - module: opdbus.fleet.opdbus_ledger_info
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

- name: Snapshot state and the state subvolume together
  opdbus.fleet.opdbus_snapshot:
    btrfs_subvolumes: [/mnt/pool/@state]
"""

RETURN = r"""
snapshot:
  description: The snapshot taken, found by O(label), restored or deleted (V(null) when check mode would take one).
  returned: when O(state) is V(present), V(restored) or V(absent)
  type: dict
  sample: {id: 17, time: "2026-11-22T10:00:00.000000Z", digest: 3f5c..., label: null, units: 4, size: 212, btrfs: []}
removed:
  description: Snapshots pruned or deleted (in check mode, that would be).
  returned: when O(state) is V(pruned) or V(absent), or V(present) with O(retention)
  type: list
  elements: dict
actions:
  description: For V(restored), the unit actions that ran (or would run), as M(opdbus.fleet.opdbus_state) returns them.
  returned: when O(state=restored)
  type: list
  elements: dict
units:
  description: For V(restored), the live state of the snapshot's units afterwards.
  returned: when O(state=restored)
  type: dict
failed_units:
  description: For V(restored), units that did not reach the snapshot's state, with the reason.
  returned: when O(state=restored)
  type: dict
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

import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.opdbus.fleet.plugins.module_utils.apply_engine import load_document
from ansible_collections.opdbus.fleet.plugins.module_utils.btrfs import BtrfsClient, BtrfsError
from ansible_collections.opdbus.fleet.plugins.module_utils.ledger import LedgerError
from ansible_collections.opdbus.fleet.plugins.module_utils.module_support import (
    apply_argument_spec, build_applier, scope_argument_spec)
from ansible_collections.opdbus.fleet.plugins.module_utils.snapshots import (
    RETENTION_KEYS, ZSTANDARD_IMPORT_ERROR, SnapshotError, SnapshotManager, validate_retention, zstandard)
from ansible_collections.opdbus.fleet.plugins.module_utils.state_document import StateDocumentError, validate
from ansible_collections.opdbus.fleet.plugins.module_utils.systemd import SystemdError, require_dbus


def units_to_snapshot(params, applier):
    if params["units"]:
        return params["units"]
    if applier.state_file and os.path.exists(applier.state_file):
        return list(validate(load_document(applier.state_file)))
    return applier.client.all_unit_names()


def run(module, manager):
    """Carry out the requested state; returns ``(changed, last ledger entry or None, result fields)``."""
    params = module.params
    state = params["state"]
    check = module.check_mode
    policy = validate_retention(params["retention"]) if params["retention"] else None
    result = {}
    if state == "restored":
        result["snapshot"], applied, entry = manager.restore(params["id"], check_mode=check)
        result.update(actions=applied.actions, diff=applied.diff(), failed_units=applied.failures,
                      units={name: unit.as_dict() for name, unit in applied.units.items()})
        return applied.changed or bool(entry), entry, result
    if state == "absent":
        result["removed"], entry = manager.delete(params["id"], check_mode=check)
        result["snapshot"] = result["removed"][0]
        return True, entry, result
    changed, entry = False, None
    if state == "present":
        units = manager.applier.client.read_units(units_to_snapshot(params, manager.applier))
        result["snapshot"], entry = manager.take(units, params["label"], params["btrfs_subvolumes"],
                                                 params["btrfs_snapshot_dir"], check_mode=check)
        changed = entry is not None or (check and result["snapshot"] is None)
    if policy:
        result["removed"], prune_entry = manager.prune(policy, check_mode=check)
        entry = prune_entry or entry
        changed = changed or bool(result["removed"])
    return changed, entry, result


def main():
    started = time.monotonic()
    module = AnsibleModule(
        argument_spec=dict(
            scope_argument_spec(),
            **apply_argument_spec(),
            state=dict(type="str", choices=["present", "restored", "pruned", "absent"], default="present"),
            id=dict(type="str"),
            label=dict(type="str"),
            units=dict(type="list", elements="str"),
            retention=dict(type="dict", options={key: dict(type="int") for key in RETENTION_KEYS}),
            btrfs_subvolumes=dict(type="list", elements="path", default=[]),
            btrfs_snapshot_dir=dict(type="path"),
        ),
        required_if=[("state", "restored", ["id"]), ("state", "absent", ["id"]), ("state", "pruned", ["retention"])],
        supports_check_mode=True,
    )
    require_dbus(module)
    if zstandard is None:
        module.fail_json(msg=missing_required_lib("zstandard", reason="to store snapshots")
                         + " Install python3-zstandard on the managed host.", exception=ZSTANDARD_IMPORT_ERROR)
    try:
        manager = SnapshotManager(build_applier(module.params), BtrfsClient(module))
        changed, entry, result = run(module, manager)
        checkpoint = entry["checkpoint"] if entry else manager.ledger.checkpoint()
    except (SnapshotError, StateDocumentError, SystemdError, LedgerError, BtrfsError) as error:
        module.fail_json(msg=str(error), changed=False)
    output = dict(result, changed=changed, entry=entry, checkpoint=checkpoint,
                  timing={"total_ms": round((time.monotonic() - started) * 1000, 1)})
    if result.get("failed_units"):
        module.fail_json(msg="units did not reach the snapshot's state: " + "; ".join(result["failed_units"].values()),
                         **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
