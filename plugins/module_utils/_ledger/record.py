# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The task of opdbus_ledger_record: record in the host's ledger a change that other tasks made.

The modules of the collection record their own changes. Files a role installs, packages it adds,
a machine it installs: those are made by other modules (ansible.builtin.copy, package, ...) and
this is how they reach the same audit trail, as one entry after the change.
"""

from __future__ import annotations

import re

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec, ledger_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import ledger_from_params

ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# What the collection's own runs write. The restore points, their removals and the crash record are
# read back from these entries, so an entry recorded under one of these names would be misread.
COLLECTION_ACTIONS = frozenset((
    "intent", "interrupted", "apply", "snapshot", "prune", "delete_snapshot", "rollback", "numa", "btrfs_subvolume",
    "install",
))


def record_spec():
    """The options of opdbus_ledger_record (with the ledger fragment)."""
    return ledger_spec().merge(ArgumentSpec(dict(
        action=dict(type="str", required=True),
        changes=dict(type="dict", required=True),
    )))


def record_task(params, check_mode, context):
    """opdbus_ledger_record: append one entry ACTION with CHANGES, unless in check mode.

    Raises OpdbusError, before anything is written, for an action name that is not a plain word or
    that the collection's own runs write.
    """
    action = params["action"]
    if not ACTION_NAME.fullmatch(action):
        raise OpdbusError(f"action {action!r}: use a lowercase word of letters, digits and underscores "
                          "that starts with a letter (at most 64 characters), e.g. role_files")
    if action in COLLECTION_ACTIONS:
        raise OpdbusError(f"action {action!r} is written by the collection's own runs (reserved: "
                          f"{', '.join(sorted(COLLECTION_ACTIONS))}); name the change another way, e.g. role_files")
    ledger = ledger_from_params(params)
    with RecordedRun(ledger, action, check_mode=check_mode, lock_timeout=params["lock_timeout"]) as run:
        try:
            entry = None if check_mode else run.record(params["changes"])
        except ValueError as error:  # what canonical JSON refuses: NaN, infinities, broken Unicode
            raise OpdbusError(f"changes cannot be recorded: {error}") from None
    for warning in run.warnings:
        context.warn(warning)
    return {"changed": True, "entry": entry, "checkpoint": entry["checkpoint"] if entry else ledger.checkpoint(),
            "interrupted": run.interrupted}
