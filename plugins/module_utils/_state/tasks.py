# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tasks of opdbus_state and opdbus_state_info, and the applier every applying task builds.

A task takes ``(params, check_mode, context)`` (the module's options, check mode, and a
TaskContext) and returns its result, or raises an OpdbusError: before any change on bad input,
and with the recorded partial change when the run fails part-way.
"""

from __future__ import annotations

import os

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError, TaskFailed
from ansible_collections.opdbus.fleet.plugins.module_utils._common.params import require_absolute, seconds
from ansible_collections.opdbus.fleet.plugins.module_utils._state.apply import StateApplier, default_paths, plan_units
from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import (
    StateDocumentError, drift, load_document, unit_name_problem, validate)
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.client import SystemdClient


def document_from_params(params):
    """The desired state document named by the module's ``state`` or ``src`` option."""
    if params["state"] is not None:
        return params["state"]
    return load_document(params["src"])


def build_applier(params):
    """The StateApplier for the module's scope, ledger and state file options (may raise SystemdError)."""
    default_state_file, default_ledger = default_paths(params["scope"])
    require_absolute(params, "state_file", "ledger_path")
    if params["state_file"] and (params["state_file"].endswith("/") or os.path.isdir(params["state_file"])):
        raise OpdbusError(f"state_file: {params['state_file']} names a directory; give the path of a file")
    return StateApplier(SystemdClient(params["scope"]), params["ledger_path"] or default_ledger,
                        state_file=params["state_file"] or default_state_file,
                        job_timeout=seconds(params, "job_timeout", 1), lock_timeout=seconds(params, "lock_timeout", 0))


def unconverged(message, failures, result):
    """The TaskFailed for units that did not reach their declared state, carrying RESULT."""
    return TaskFailed(message + "; ".join(failures.values()), failed_units=failures, **result)


def apply_task(params, check_mode, context):
    """opdbus_state: apply the document (or, in check mode, say what applying it would do)."""
    document = document_from_params(params)
    applier = build_applier(params)
    with applier.recorded_run("apply", check_mode=check_mode) as run:
        result = applier.check(document) if check_mode else applier.apply(document, run)
    for warning in run.warnings:
        context.warn(warning)
    output = dict(
        changed=result.changed,
        actions=result.actions,
        files=result.files,
        absent=result.absent,
        conditions_unmet=result.conditions_unmet,
        interrupted=run.interrupted,
        units={name: unit.as_dict() for name, unit in result.units.items()},
        entry=result.entry,
        checkpoint=result.entry["checkpoint"] if result.entry else applier.ledger.checkpoint(),
        diff=result.diff(),
    )
    if result.failures:
        raise unconverged("units did not reach their declared state: ", result.failures, output)
    return output


def state_info_task(params, check_mode, context):
    """opdbus_state_info: live units, and drift by the same planning rules as an apply."""
    desired = None
    if params["state"] is not None or params["src"] is not None:
        desired = validate(document_from_params(params))
    bad_names = [f"units: {name!r}: {problem}" for name in params["units"] or ()
                 for problem in [unit_name_problem(name)] if problem]
    if bad_names:
        raise StateDocumentError(bad_names)
    client = SystemdClient(params["scope"])
    plans = plan_units(client, desired)[0] if desired else []
    names = params["units"] or [plan.name for plan in plans] or client.all_unit_names()
    live = client.read_units(sorted(set(names) | {plan.name for plan in plans}))
    report = drift(plans)
    return dict(
        units={name: live[name].as_dict() for name in names if name in live},
        drift=report,
        absent=[plan.name for plan in plans if plan.status == "absent"],
        conditions_unmet={plan.name: plan.unmet for plan in plans if plan.status == "condition_unmet"},
        in_sync=not report,
    )
