# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument-spec pieces shared by the modules (one per doc fragment), and the runners their main() calls."""

from __future__ import annotations

import os
import time

from ansible_collections.opdbus.fleet.plugins.module_utils.apply_engine import (
    StateApplier, default_paths, plan_units)
from ansible_collections.opdbus.fleet.plugins.module_utils.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils.ledger import DEFAULT_LEDGER_DIR, Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils.state_document import (
    StateDocumentError, drift, load_document, unit_name_problem, validate)
from ansible_collections.opdbus.fleet.plugins.module_utils.systemd import SystemdClient


def document_argument_spec():
    """Options of the opdbus.fleet.state_document doc fragment."""
    return dict(state=dict(type="dict"), src=dict(type="path"))


def scope_argument_spec():
    """Options of the opdbus.fleet.systemd doc fragment."""
    return dict(scope=dict(type="str", choices=["system", "user"], default="system"))


def ledger_argument_spec():
    """Options of the opdbus.fleet.ledger doc fragment."""
    return dict(ledger_path=dict(type="path"), lock_timeout=dict(type="int", default=120))


def apply_argument_spec():
    """Options of the opdbus.fleet.apply and opdbus.fleet.ledger doc fragments."""
    return dict(ledger_argument_spec(), state_file=dict(type="path"), job_timeout=dict(type="int", default=90))


def ledger_from_params(params):
    """The Ledger named by ``ledger_path`` (default: the system ledger), once ``lock_timeout`` checks out."""
    seconds(params, "lock_timeout", 0)
    require_absolute(params, "ledger_path")
    return Ledger(params["ledger_path"] or DEFAULT_LEDGER_DIR)


def require_absolute(params, *options):
    """Refuse a relative path in OPTIONS: it would land wherever the module happens to run."""
    for option in options:
        if params[option] and not os.path.isabs(params[option]):
            raise OpdbusError(f"{option}: {params[option]!r} is not an absolute path")


def seconds(params, option, minimum):
    """The value of a time-out OPTION, refused (before anything is done) when below MINIMUM."""
    if params[option] < minimum:
        raise OpdbusError(f"{option} must be {minimum} or more seconds, not {params[option]}")
    return params[option]


def document_from_params(params):
    """The desired state document named by the module's ``state`` or ``src`` option."""
    if params["state"] is not None:
        return params["state"]
    return load_document(params["src"])


def run_apply_task(module, started, task, failed_units_message):
    """End an applying module's task with what TASK() returns: ``(result fields, warnings, failed units)``.

    The one error path of the modules that apply documents: an OpdbusError fails the task with its
    message and details, warnings are passed on, and units that did not converge fail the task
    with the full result.
    """
    try:
        output, warnings, failures = task()
    except OpdbusError as error:
        module.fail_json(msg=str(error), **error.details)
    for warning in warnings:
        module.warn(warning)
    output["timing"] = {"total_ms": round((time.monotonic() - started) * 1000, 1)}
    if failures:
        module.fail_json(msg=failed_units_message + "; ".join(failures.values()), failed_units=failures, **output)
    module.exit_json(**output)


def apply_state(params, check_mode):
    """Run opdbus_state: ``(result fields, warnings, failures)``; raises OpdbusError before any change
    on bad input, and after a recorded partial change when the run fails part-way."""
    document = document_from_params(params)
    applier = build_applier(params)
    with applier.recorded_run("apply", check_mode=check_mode) as run:
        result = applier.check(document) if check_mode else applier.apply(document, run)
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
    return output, run.warnings, result.failures


def read_state(params):
    """Run opdbus_state_info: live units, and drift by the same planning rules as an apply."""
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


def build_applier(params):
    """The StateApplier for the module's scope, ledger and state file options (may raise SystemdError)."""
    default_state_file, default_ledger = default_paths(params["scope"])
    require_absolute(params, "state_file", "ledger_path")
    if params["state_file"] and (params["state_file"].endswith("/") or os.path.isdir(params["state_file"])):
        raise OpdbusError(f"state_file: {params['state_file']} names a directory; give the path of a file")
    return StateApplier(SystemdClient(params["scope"]), params["ledger_path"] or default_ledger,
                        state_file=params["state_file"] or default_state_file,
                        job_timeout=seconds(params, "job_timeout", 1), lock_timeout=seconds(params, "lock_timeout", 0))
