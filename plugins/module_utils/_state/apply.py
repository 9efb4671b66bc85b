# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring systemd units to a desired state document and record what changed.

The one apply engine: ``opdbus_state`` applies documents with it and ``opdbus_snapshot`` restores
snapshots with it, each inside a RecordedRun (one run at a time per ledger). Every unit is planned
before anything is touched, including what systemd would refuse, so an invalid document changes
nothing. Then an ``intent`` entry is appended, and each phase runs for all units at once, in the
order that is safe for each unit: unmask, enable/disable, daemon-reload, start/stop (waiting for
the jobs), mask. A unit that fails does not stop the others; the caller gets every failure by
name. The outcome entry records what ran, also when the run fails part-way, and names the blob
that holds the resulting state, so every apply is a restore point.
"""

from __future__ import annotations

import json
import os

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import host_file_error
from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import atomic_write, read_text, xdg_home
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.blobs import BlobStore, SnapshotError, zstandard
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import (
    DEFAULT_LEDGER_DIR,
    DEFAULT_RUN_LOCK_TIMEOUT,
    Ledger,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import (
    StateDocumentError,
    expected_after,
    needs_job_facts,
    plan_unit,
    snapshot_document,
    unit_path,
    validate,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.client import SystemdError


SYSTEM_STATE_FILE = "/etc/op-dbus/state.json"
CURRENT_STATE_NAME = os.path.join("state", "current.json")

# The order in which apply runs the actions of all units; start and stop jobs run together.
PHASES = {"unmask": 0, "enable": 1, "disable": 2, "start": 3, "stop": 3, "mask": 4}


def default_paths(scope):
    """``(state_file, ledger_dir)`` for a scope: system-wide, or under the user's XDG directories."""
    if scope == "system":
        return SYSTEM_STATE_FILE, DEFAULT_LEDGER_DIR
    return (os.path.join(xdg_home("XDG_CONFIG_HOME"), "op-dbus", "state.json"),
            os.path.join(xdg_home("XDG_STATE_HOME"), "op-dbus", "blockchain"))


def in_phase_order(actions):
    """ACTIONS (``{"unit", "action"}``) in the order apply runs them; stable within a phase."""
    return sorted(actions, key=lambda action: PHASES[action["action"]])


def plan_units(client, desired):
    """Plan every unit of DESIRED (``validate()``'s result) against the live system: ``(plans, live)``.

    The facts that only some refusals need (start conditions, RefuseManualStart/Stop, the
    administrator's own unit file) are read in one more round trip, only for the units whose
    first plan starts, stops or masks them; those are planned again with the facts.
    """
    live = client.read_units(list(desired))
    plans = [plan_unit(name, fields, live.get(name)) for name, fields in desired.items()]
    recheck = [plan for plan in plans if needs_job_facts(plan)]
    if recheck:
        jobs = [live[plan.name] for plan in recheck if "start" in plan.actions or "stop" in plan.actions]
        if jobs:
            client.fill_job_facts(jobs)
        client.fill_own_files([live[plan.name] for plan in recheck if "mask" in plan.actions and plan.name in live])
        replanned = {plan.name: plan_unit(plan.name, plan.desired, live.get(plan.name)) for plan in recheck}
        plans = [replanned.get(plan.name, plan) for plan in plans]
    return plans, live


class ApplyResult:
    """The outcome of one run (or, from ``check``, of the plan)."""

    def __init__(self, plans, units, actions, failures, file_changes, files, entry=None, skipped=None):
        self.plans = plans
        self.units = units
        self.actions = actions
        self.failures = failures
        self.file_changes = file_changes
        self.files = files
        self.entry = entry
        # Units whose start job ran without effect because systemd found a start condition unmet.
        self.skipped = skipped or {}

    @property
    def changed(self):
        return bool(self.actions or self.files)

    @property
    def absent(self):
        return [plan.name for plan in self.plans if plan.status == "absent"]

    @property
    def conditions_unmet(self):
        unmet = {plan.name: plan.unmet for plan in self.plans if plan.status == "condition_unmet"}
        unmet.update(self.skipped)
        return unmet

    def diff(self):
        changed = [plan for plan in self.plans if plan.actions]
        return {
            "before": {"units": {plan.name: plan.before for plan in changed}},
            "after": {"units": {plan.name: expected_after(plan) for plan in changed}},
        }

    def ledger_changes(self):
        """What the ledger records: per unit, the actions that ran and its state before and after."""
        done = {}
        for action in self.actions:
            done.setdefault(action["unit"], []).append(action["action"])
        after = {name: unit.snapshot() for name, unit in self.units.items()}
        return [{"unit": plan.name, "actions": done[plan.name], "before": plan.before, "after": after.get(plan.name)}
                for plan in self.plans if plan.name in done]


class StateApplier:
    """Applies documents through a SystemdClient and records changes in a Ledger."""

    def __init__(self, client, ledger_dir, state_file=None, job_timeout=90, actor=None,
                 lock_timeout=DEFAULT_RUN_LOCK_TIMEOUT):
        self.client = client
        self.ledger = Ledger(ledger_dir)
        self.blobs = BlobStore(ledger_dir)
        self.state_file = state_file
        self.current_file = os.path.join(ledger_dir, CURRENT_STATE_NAME)
        self.job_timeout = job_timeout
        self.actor = actor
        self.lock_timeout = lock_timeout

    def recorded_run(self, action="apply", check_mode=False):
        """The RecordedRun to plan and apply in (see recorded_run.py)."""
        return RecordedRun(self.ledger, action, actor=self.actor, check_mode=check_mode, lock_timeout=self.lock_timeout)

    def plan(self, document):
        """Validate DOCUMENT and plan every unit; raises StateDocumentError before touching anything."""
        plans, live = plan_units(self.client, validate(document))
        problems = [plan.problem for plan in plans if plan.problem]
        if problems:
            raise StateDocumentError(problems)
        return plans, live

    def check(self, document, persist=True):
        """What ``apply`` would do: its actions in the order it runs them, and the files it would write."""
        plans, live = self.plan(document)
        stale = self._stale_state_files(document) if persist else []
        return ApplyResult(plans, live, self._planned_actions(plans), {}, [], stale)

    def apply(self, document, run, ledger_extra=None, persist=True):
        """Apply DOCUMENT inside RUN (a RecordedRun); returns the ApplyResult, with the outcome ``entry``.

        A run with nothing to do records nothing. Otherwise the intent is recorded before the first
        change and the outcome after, including after a partial failure, so the ledger never misses
        a change that did happen. With PERSIST false (a restore) the state files are left alone:
        they hold the administrator's desired document, which a restore point does not replace.
        """
        plans, live = self.plan(document)
        planned = self._planned_actions(plans)
        stale = self._stale_state_files(document) if persist else []
        if not planned and not stale:
            return ApplyResult(plans, live, [], {}, [], [])
        if zstandard is None:
            raise SnapshotError("python3-zstandard is needed on the host: every apply keeps the state it leaves as a "
                                "restore point, compressed with zstd. Install python3-zstandard")
        run.intend(planned + [{"file": path} for path in stale])
        result = self._execute(plans, live, run.progress)
        if persist:
            self._write_state_files(document, converged=not result.failures, written=result.files)
        changes = {"units": result.ledger_changes(), "files": result.files}
        if result.file_changes:
            changes["unit_files"] = result.file_changes
        if result.failures:
            changes["failed"] = result.failures
        if result.conditions_unmet:
            changes["conditions_unmet"] = result.conditions_unmet
        if ledger_extra:
            changes.update(ledger_extra)
        digest = self._store_state(snapshot_document(result.units))
        result.entry = run.record(changes, state_sha256=digest)
        return result

    @staticmethod
    def _planned_actions(plans):
        return in_phase_order({"unit": plan.name, "action": action} for plan in plans for action in plan.actions)

    def _store_state(self, document):
        """Keep DOCUMENT as the blob a restore of this entry brings back; its digest is the entry's state_sha256."""
        try:
            return self.blobs.put(document)
        except OSError as error:
            raise host_file_error("write the state blob in", self.blobs.directory, error) from None

    # ------------------------------------------------------------------ phases
    def _execute(self, plans, live, progress):
        """Run PLANS phase by phase for all units at once; LIVE is what the plan read.

        PROGRESS (the run's) always holds what has run so far: ``actions`` that took effect,
        ``attempted`` jobs whose effect is not known yet, and the ``files`` written, so that an
        exception from any phase still leaves the ledger an accurate outcome.
        """
        failures = {}
        actions = progress.setdefault("actions", [])
        files = progress.setdefault("files", [])
        file_changes = []
        pending = {plan.name: list(plan.actions) for plan in plans if plan.actions}

        def unit_file_phase(verb, call):
            names = [name for name, todo in pending.items() if todo and todo[0] == verb]
            if not names:
                return False
            changes, errors = self._batched(call, names)
            file_changes.extend(changes)
            for name in names:
                if name in errors:
                    failures[name] = f"{unit_path(name)}: {verb} failed: {errors[name]}"
                    pending[name] = []
                else:
                    actions.append({"unit": name, "action": verb})
                    pending[name].pop(0)
            return True

        touched = unit_file_phase("unmask", self.client.unmask)
        touched = unit_file_phase("enable", self.client.enable) or touched
        touched = unit_file_phase("disable", self.client.disable) or touched
        jobs = [(name, todo[0]) for name, todo in pending.items() if todo and todo[0] in ("start", "stop")]
        if jobs and not touched:
            waiting = [live[name] for name, _verb in jobs]
            self.client.fill_need_daemon_reload(waiting)
            touched = any(unit.need_daemon_reload for unit in waiting)
        if touched:
            try:
                self.client.reload()
            except SystemdError as error:
                for name, _verb in jobs:
                    failures[name] = f"{unit_path(name)}: not started or stopped: daemon-reload failed: {error}"
                    pending[name] = []
                jobs = []
        if jobs:
            progress["attempted"] = [{"unit": name, "action": verb} for name, verb in jobs]
            starting = [live[name].object_path for name, verb in jobs if verb == "start"]
            for name, error in self.client.run_jobs(jobs, self.job_timeout, object_paths=starting).items():
                failures[name] = f"{unit_path(name)}: {error}"
                pending[name] = []
            jobs = [(name, verb) for name, verb in jobs if name not in failures]
            for name, _verb in jobs:
                pending[name].pop(0)
        if unit_file_phase("mask", self.client.mask):
            self.client.reload()

        units = self.client.read_units([plan.name for plan in plans])
        skipped = self._skipped_starts(jobs, units)
        # A job systemd ran is a change even when the unit then failed (its process ran, and the unit is
        # left "failed"); only a start that systemd skipped for an unmet condition changed nothing.
        actions += [{"unit": name, "action": verb} for name, verb in jobs if name not in skipped]
        actions.sort(key=lambda action: PHASES[action["action"]])
        progress.pop("attempted", None)
        for plan in plans:
            if plan.name not in failures and plan.name not in skipped and plan.actions:
                problem = self._unconverged(plan, units[plan.name])
                if problem:
                    failures[plan.name] = problem
        return ApplyResult(plans, units, actions, failures, file_changes, files, skipped=skipped)

    def _skipped_starts(self, jobs, units):
        """``{name: unmet conditions}`` of started units that systemd skipped for an unmet Condition*=.

        That is how a unit declared active behaves on a machine without what it needs (bluetooth
        without an adapter): reported, not failed. A failed Assert*= is a failure.
        """
        idle = [units[name] for name, verb in jobs if verb == "start" and not units[name].running]
        if not idle:
            return {}
        self.client.fill_job_facts(idle)
        return {unit.name: unit.unmet_conditions for unit in idle if unit.unmet_conditions}

    @staticmethod
    def _batched(call, names):
        """``(changes, {name: error})``: one call for all NAMES, per unit only to attribute a failure."""
        try:
            return call(names), {}
        except SystemdError as error:
            if len(names) == 1:
                return [], {names[0]: str(error)}
        changes, errors = [], {}
        for name in names:
            try:
                changes.extend(call([name]))
            except SystemdError as error:
                errors[name] = str(error)
        return changes, errors

    def _unconverged(self, plan, unit):
        """Why UNIT did not reach PLAN's desired state, or None."""
        snapshot = unit.snapshot()
        # A unit whose start conditions are unmet is not started: only its other fields must hold.
        wrong = [field for field, value in plan.desired.items() if snapshot.get(field) != value
                 and not (field == "active_state" and plan.status == "condition_unmet")]
        if not wrong:
            return None
        detail = f"active_state={unit.active_state} sub_state={unit.sub_state}"
        if "active_state" in wrong:
            detail = " ".join([detail] + self.client.failure_details(unit))
        return (f"{unit_path(plan.name)} did not reach {', '.join(f'{f}={plan.desired[f]}' for f in wrong)}: "
                f"{detail}; see `journalctl -u {plan.name}`")

    # ------------------------------------------------------------------ files
    def _state_file_targets(self):
        """``(path, private)`` of the files that hold the applied document."""
        targets = [(self.state_file, False)] if self.state_file else []
        return targets + [(self.current_file, True)]

    def _stale_state_files(self, document):
        """The state files that do not hold DOCUMENT yet (what a converging apply writes)."""
        return [path for path, _private in self._state_file_targets() if _read_json(path) != document]

    def _write_state_files(self, document, converged, written):
        """Write the desired document to the state file, and as current.json once it is applied.

        Each path goes into WRITTEN (the run's progress) as soon as it is replaced.
        """
        for path, private in self._state_file_targets():
            if private and not converged:
                continue
            if _read_json(path) != document:
                try:
                    _write_json(path, document, private)
                except OSError as error:
                    raise host_file_error("write", path, error) from None
                written.append(path)


def _read_json(path):
    """The JSON document in PATH; None when it is missing or not JSON (it gets rewritten then)."""
    try:
        text = read_text(path)
        return None if text is None else json.loads(text)
    except ValueError:
        return None
    except OSError as error:
        raise host_file_error("read", path, error) from None


def _write_json(path, document, private):
    data = (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(path, data, 0o600 if private else 0o644, directory_mode=0o700 if private else 0o755)
