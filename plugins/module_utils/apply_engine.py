# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring systemd units to a desired state document and record what changed.

The one apply engine: ``opdbus_state`` applies documents with it and ``opdbus_snapshot`` restores
snapshots with it. Every unit is planned before anything is touched (so an invalid document or
an unknown unit changes nothing); then each phase runs for all units at once, in the order that
is safe for each unit: unmask, enable/disable, daemon-reload, start/stop (waiting for the jobs),
mask. A unit that fails does not stop the others; the caller gets every failure by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd

from ansible_collections.opdbus.fleet.plugins.module_utils.files import atomic_write, read_text
from ansible_collections.opdbus.fleet.plugins.module_utils.ledger import DEFAULT_LEDGER_DIR, Ledger, canonical_json
from ansible_collections.opdbus.fleet.plugins.module_utils.state_document import (
    StateDocumentError, expected_after, plan_unit, snapshot_document, unit_path, validate)
from ansible_collections.opdbus.fleet.plugins.module_utils.systemd import SystemdError

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


def load_document(src):
    """Read a JSON state document from a file on the host; errors say which file and where."""
    try:
        with open(src, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise StateDocumentError([f"src: {src} does not exist on this host"]) from None
    except OSError as error:
        raise StateDocumentError([f"src: cannot read {src}: {error.strerror}"]) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StateDocumentError([f"src: {src} is not UTF-8 text"]) from None
    except ValueError as error:
        raise StateDocumentError([f"src: {src} is not valid JSON: {error}"]) from None


def state_sha256(document):
    return hashlib.sha256(canonical_json(document)).hexdigest()


def in_phase_order(actions):
    """ACTIONS (``{"unit", "action"}``) in the order apply runs them; stable within a phase."""
    return sorted(actions, key=lambda action: PHASES[action["action"]])


class ApplyResult:
    """The outcome of one run (or, from ``check``, of the plan)."""

    def __init__(self, plans, units, actions, failures, file_changes):
        self.plans = plans
        self.units = units
        self.actions = actions
        self.failures = failures
        self.file_changes = file_changes

    @property
    def changed(self):
        return bool(self.actions)

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

    def __init__(self, client, ledger_dir, state_file=None, job_timeout=90, actor=None):
        self.client = client
        self.ledger = Ledger(ledger_dir)
        self.state_file = state_file
        self.current_file = os.path.join(ledger_dir, CURRENT_STATE_NAME)
        self.job_timeout = job_timeout
        self.actor = actor

    def plan(self, document):
        """Validate DOCUMENT and plan every unit; raises StateDocumentError before touching anything."""
        desired = validate(document)
        live = self.client.read_units(list(desired))
        plans = [plan_unit(name, fields, live.get(name)) for name, fields in desired.items()]
        problems = [plan.problem for plan in plans if plan.problem]
        if problems:
            raise StateDocumentError(problems)
        return plans, live

    def check(self, document):
        """What ``apply`` would do, with the actions in the order it would run them (phase by phase)."""
        plans, live = self.plan(document)
        actions = in_phase_order({"unit": plan.name, "action": action} for plan in plans for action in plan.actions)
        return ApplyResult(plans, live, actions, {}, [])

    def apply(self, document, ledger_action="apply", ledger_extra=None):
        """Apply DOCUMENT; returns ``(ApplyResult, ledger entry or None)``.

        The ledger entry is written whenever anything changed, including after partial failure, so
        the ledger never misses a change that did happen.
        """
        plans, live = self.plan(document)
        result = self._execute(plans, live)
        file_updates = self._write_state_files(document, converged=not result.failures)
        entry = None
        if result.actions or file_updates:
            changes = {"units": result.ledger_changes(), "files": file_updates}
            if result.file_changes:
                changes["unit_files"] = result.file_changes
            if result.failures:
                changes["failed"] = result.failures
            if ledger_extra:
                changes.update(ledger_extra)
            entry = self.ledger.append(ledger_action, changes,
                                       state_sha256=state_sha256(snapshot_document(result.units)), actor=self.actor)
        return result, entry

    # ------------------------------------------------------------------ phases
    def _execute(self, plans, live):
        """Run PLANS phase by phase for all units at once; LIVE is what the plan read."""
        failures = {}
        actions = []
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
            for name, error in self.client.run_jobs(jobs, self.job_timeout).items():
                failures[name] = f"{unit_path(name)}: {error}"
                pending[name] = []
            jobs = [(name, verb) for name, verb in jobs if name not in failures]
            for name, _verb in jobs:
                pending[name].pop(0)
        if unit_file_phase("mask", self.client.mask):
            self.client.reload()

        units = self.client.read_units([plan.name for plan in plans])
        for plan in plans:
            if plan.name not in failures and plan.actions:
                problem = self._unconverged(plan, units[plan.name])
                if problem:
                    failures[plan.name] = problem
        # A finished job counts as a change only if it had its effect (a start that failed did not).
        actions += [{"unit": name, "action": verb} for name, verb in jobs
                    if units[name].running == (verb == "start")]
        return ApplyResult(plans, units, in_phase_order(actions), failures, file_changes)

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
        wrong = [field for field, value in plan.desired.items() if snapshot.get(field) != value]
        if not wrong:
            return None
        detail = f"active_state={unit.active_state} sub_state={unit.sub_state}"
        if "active_state" in wrong:
            detail = " ".join([detail] + self.client.failure_details(unit))
        return (f"{unit_path(plan.name)} did not reach {', '.join(f'{f}={plan.desired[f]}' for f in wrong)}: "
                f"{detail}; see `journalctl -u {plan.name}`")

    # ------------------------------------------------------------------ files
    def _write_state_files(self, document, converged):
        """Write the desired document to the state file, and as current.json once it is applied."""
        updates = []
        targets = [(self.state_file, False)] if self.state_file else []
        if converged:
            targets.append((self.current_file, True))
        for path, private in targets:
            if _read_json(path) != document:
                _write_json(path, document, private)
                updates.append(path)
        return updates


def _read_json(path):
    """The JSON document in PATH; None when it is missing or not JSON (it gets rewritten then)."""
    try:
        text = read_text(path)
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def _write_json(path, document, private):
    data = (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write(path, data, 0o600 if private else 0o644, directory_mode=0o700 if private else 0o755)
