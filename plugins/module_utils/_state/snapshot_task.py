# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The task of opdbus_snapshot: take, restore, prune or delete restore points.

Apart from the rest of snapshots.py, so that opdbus_ledger_info, which reads restore points, does
not carry the apply engine and the BTRFS client in its payload.
"""

from __future__ import annotations

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.client import BtrfsClient
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshots import SnapshotManager, validate_retention
from ansible_collections.opdbus.fleet.plugins.module_utils._state.tasks import build_applier, unconverged


def snapshot_task(params, check_mode, context):
    """opdbus_snapshot: take, restore, prune or delete restore points, as PARAMS say.

    Raises OpdbusError for what is refused (nothing changed then), and for a failure after a
    recorded change (its details say what changed).
    """
    policy = validate_retention(params["retention"]) if params["retention"] else None
    manager = SnapshotManager(build_applier(params), BtrfsClient(context.run, context.find_program))
    state = params["state"]
    failures = {}
    if state == "restored":
        output, failures = manager.restore(params["id"], check_mode)
    elif state == "absent":
        output = manager.delete(params["id"], check_mode)
    else:
        output = {"changed": False, "entry": None}
        if state == "present":
            output = manager.take(params["units"], params["label"], params["btrfs_subvolumes"],
                                  params["btrfs_snapshot_dir"], check_mode)
        if policy:
            pending = manager.pending_point() if check_mode and output["changed"] else None
            try:
                pruned = manager.prune(policy, check_mode, pending)
            except OpdbusError as error:
                error.details.update(changed=output["changed"] or error.details.get("changed", False),
                                     snapshot=output.get("snapshot"))
                raise
            output = dict(output, removed=pruned["removed"], deleted=pruned["deleted"],
                          changed=output["changed"] or pruned["changed"], entry=pruned["entry"] or output["entry"])
    output["checkpoint"] = output["entry"]["checkpoint"] if output["entry"] else manager.applier.ledger.checkpoint()
    output["interrupted"] = manager.interrupted
    for warning in manager.warnings:
        context.warn(warning)
    if failures:
        raise unconverged("units did not reach the restore point's state: ", failures, output)
    return output
