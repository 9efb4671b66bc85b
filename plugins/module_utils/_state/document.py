# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The desired state document (op-dbus compatible) and the plan that brings live units to it.

Pure logic, no D-Bus: ``validate`` checks a document and names the exact path of every problem;
``plan`` compares declared units with their live status and returns the actions, in the only
order that is safe for one unit: unmask, enable/disable, start/stop, mask.
"""

from __future__ import annotations

import json
import re

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.units import BROKEN_LOAD_STATES, UNCHANGEABLE_STATES


SUPPORTED_VERSIONS = (1,)
UNIT_FIELDS = {
    "active_state": ("active", "inactive"),
    "enabled": (True, False),
    "masked": (True, False),
}
UNIT_TYPES = ("service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer",
              "slice", "scope")

# systemd's unit_name_is_valid(): a prefix, an optional @instance, a known type suffix; 255 bytes.
UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(%s)$" % "|".join(UNIT_TYPES))
UNIT_NAME_MAX = 255
ACTION_ORDER = ("unmask", "enable", "disable", "start", "stop", "mask")


class StateDocumentError(OpdbusError):
    """An invalid document; ``problems`` lists ``path: message`` strings."""

    def __init__(self, problems):
        self.problems = problems
        super().__init__("invalid desired state: " + "; ".join(problems), problems=problems)


def load_document(path, option="src"):
    """Read the JSON state document in PATH on the host; errors name the OPTION that gave the path."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise StateDocumentError([f"{option}: {path} does not exist on this host"]) from None
    except OSError as error:
        raise StateDocumentError([f"{option}: cannot read {path}: {error.strerror}"]) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StateDocumentError([f"{option}: {path} is not UTF-8 text"]) from None
    except ValueError as error:
        raise StateDocumentError([f"{option}: {path} is not valid JSON: {error}"]) from None


def unit_path(name, field=None):
    path = f'plugins.systemd.units["{name}"]'
    return f"{path}.{field}" if field else path


def _type_name(value):
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def validate(document):
    """Return ``{unit name: {field: value}}`` for a valid document; raise StateDocumentError otherwise."""
    problems = []
    if not isinstance(document, dict):
        raise StateDocumentError([f"(document): must be a mapping, not {_type_name(document)}"])
    for key in sorted(set(document) - {"version", "plugins"}):
        problems.append(f"{key}: unknown field (known: version, plugins)")
    version = document.get("version")
    if "version" not in document:
        problems.append("version: missing (this collection reads version 1)")
    elif isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        problems.append(f"version: unsupported version {version!r} (this collection reads version 1)")
    plugins = document.get("plugins", {})
    units = {}
    if not isinstance(plugins, dict):
        problems.append(f"plugins: must be a mapping, not {_type_name(plugins)}")
    else:
        for plugin in sorted(set(plugins) - {"systemd"}):
            problems.append(f"plugins.{plugin}: unknown plugin (known: systemd)")
        units = _validate_systemd(plugins.get("systemd", {}), problems)
    if problems:
        raise StateDocumentError(problems)
    return units


def _validate_systemd(systemd, problems):
    if not isinstance(systemd, dict):
        problems.append(f"plugins.systemd: must be a mapping, not {_type_name(systemd)}")
        return {}
    for key in sorted(set(systemd) - {"units"}):
        problems.append(f"plugins.systemd.{key}: unknown field (known: units)")
    declared = systemd.get("units", {})
    if not isinstance(declared, dict):
        problems.append(f"plugins.systemd.units: must be a mapping, not {_type_name(declared)}")
        return {}
    units = {}
    for name, fields in declared.items():
        name_problem = unit_name_problem(name)
        if name_problem:
            problems.append(f"{unit_path(name)}: {name_problem}")
            continue
        if not isinstance(fields, dict):
            problems.append(f"{unit_path(name)}: must be a mapping, not {_type_name(fields)}")
            continue
        clean = {}
        for field, value in fields.items():
            if field not in UNIT_FIELDS:
                problems.append(f"{unit_path(name, field)}: unknown field (known: {', '.join(UNIT_FIELDS)})")
            elif not any(value is allowed if isinstance(allowed, bool) else value == allowed
                         for allowed in UNIT_FIELDS[field]):
                allowed = " or ".join(repr(a) if isinstance(a, str) else str(a).lower() for a in UNIT_FIELDS[field])
                problems.append(f"{unit_path(name, field)}: must be {allowed}, not {value!r}")
            else:
                clean[field] = value
        if clean.get("masked") is True:
            if clean.get("active_state") == "active":
                problems.append(f"{unit_path(name)}: a masked unit cannot be active")
            if clean.get("enabled") is True:
                problems.append(f"{unit_path(name)}: a masked unit cannot be enabled")
        units[name] = clean
    return units


def unit_name_problem(name):
    """Why NAME is not a valid unit name to declare, or None."""
    if not isinstance(name, str) or not name:
        return "a unit name must be a non-empty string"
    if len(name.encode("utf-8")) > UNIT_NAME_MAX:
        return f"invalid unit name: longer than {UNIT_NAME_MAX} bytes"
    if not UNIT_NAME.fullmatch(name):
        return ("invalid unit name: expected NAME.TYPE with TYPE one of "
                + ", ".join(UNIT_TYPES) + " and only letters, digits and :_.\\- in NAME")
    if "@." in name:
        return "a template unit cannot be declared; name an instance such as getty@tty1.service"
    return None


class UnitPlan:
    """What one declared unit needs; ``actions`` are in execution order.

    ``status`` is None, ``absent`` (not installed, and the declaration holds without it) or
    ``condition_unmet`` (declared active, but systemd skipped its start for ``unmet`` conditions).
    """

    __slots__ = ("name", "desired", "before", "actions", "problem", "status", "unmet")

    def __init__(self, name, desired, before, actions, problem=None, status=None, unmet=()):
        self.name = name
        self.desired = desired
        self.before = before
        self.actions = actions
        self.problem = problem
        self.status = status
        self.unmet = list(unmet)


# What a unit systemd does not know looks like as a declaration: stopped and not masked.
ABSENT_SNAPSHOT = {"active_state": "inactive", "masked": False}


def plan_unit(name, desired, live):
    """Plan one unit. LIVE is a systemd.UnitStatus-like object (or None when systemd did not report it).

    Everything systemd would refuse is found here, so a document that needs it changes nothing.
    Some refusals need facts read only for units that start, stop or mask (``job_facts``,
    ``own_file``); the engine fills those and plans such units again.
    """
    if live is None or not live.exists:
        return _plan_absent(name, desired)
    before = live.snapshot()

    def refuse(field, message):
        return UnitPlan(name, desired, before, [], f"{unit_path(name, field)}: {message}")

    actions = []
    masked = live.masked
    want_masked = desired.get("masked")
    if want_masked is False and masked:
        if live.unit_file_state == "masked-runtime":
            return refuse("masked", "the unit is masked at runtime (in /run), which does not survive a reboot and "
                                    f"which systemd's unmask leaves in place; run `systemctl unmask --runtime {name}`")
        actions.append("unmask")
        masked = False
    if masked and want_masked is None and desired.get("enabled") is True:
        return refuse("enabled", "the unit is masked; declare masked: false to unmask it")
    if masked and want_masked is None and desired.get("active_state") == "active":
        return refuse("active_state", "the unit is masked; declare masked: false to unmask it")
    want_enabled = desired.get("enabled")
    if want_enabled is not None and not masked and want_enabled != live.enabled:
        if live.unit_file_state == "bad":
            return refuse("enabled", "systemd cannot parse the unit file (unit file state bad); fix it, see "
                                     f"`systemd-analyze verify {name}`")
        if not want_enabled and live.unit_file_state in UNCHANGEABLE_STATES:
            return refuse("enabled", f"a {live.unit_file_state} unit cannot be disabled "
                                     "(it has no [Install] section); mask it instead")
        if want_enabled and live.enabled is None:
            return refuse("enabled", "the unit has no unit file to enable")
        actions.append("enable" if want_enabled else "disable")
    want_active = desired.get("active_state")
    facts = live.job_facts
    if want_active == "active" and not live.running:
        if live.load_state in BROKEN_LOAD_STATES:
            return refuse("active_state", f"systemd cannot start the unit: its load state is {live.load_state}; "
                                          f"fix the unit file (see `systemctl status {name}`)")
        if live.unmet_conditions:
            return UnitPlan(name, desired, before, actions, status="condition_unmet", unmet=live.unmet_conditions)
        if facts is not None and facts.refuse_start:
            return refuse("active_state", "the unit sets RefuseManualStart=yes, so systemd refuses to start it; "
                                          "start the unit that pulls it in instead")
        actions.append("start")
    elif (want_active == "inactive" or want_masked) and live.running:
        if facts is not None and facts.refuse_stop:
            return refuse("active_state", "the unit sets RefuseManualStop=yes, so systemd refuses to stop it")
        actions.append("stop")
    if want_masked and not masked:
        if live.own_file:
            return refuse("masked", f"{live.own_file} is the unit's own file, and systemd masks a unit by putting a "
                                    "symlink to /dev/null in its place; remove or rename that file to mask the unit, "
                                    "or declare it inactive and disabled instead")
        actions.append("mask")
    return UnitPlan(name, desired, before, actions)


def _plan_absent(name, desired):
    """A unit that is not installed: it already is stopped and disabled, and it can be masked."""
    for field, value in (("active_state", "active"), ("enabled", True)):
        if desired.get(field) == value:
            return UnitPlan(name, desired, None, [],
                            f"{unit_path(name, field)}: no such unit on this host (systemd reports it not-found), "
                            f"so it cannot be {field}: {str(value).lower() if value is True else value}; install it "
                            "or declare it inactive and disabled")
    actions = ["mask"] if desired.get("masked") is True else []
    return UnitPlan(name, desired, dict(ABSENT_SNAPSHOT), actions, status="absent")


def needs_job_facts(plan):
    """Whether PLAN's refusals depend on facts read only on demand (conditions, RefuseManual*, own files)."""
    return any(action in ("start", "stop", "mask") for action in plan.actions)


def expected_after(plan):
    """The snapshot entry the unit should have once PLAN's actions have run (for check and diff mode)."""
    after = dict(plan.before)
    for action in plan.actions:
        if action in ("unmask", "mask"):
            after["masked"] = action == "mask"
            if action == "mask":
                after["enabled"] = False
        elif action in ("enable", "disable"):
            after["enabled"] = action == "enable"
        else:
            after["active_state"] = "active" if action == "start" else "inactive"
    return after


def snapshot_document(units):
    """A desired state document that describes UNITS ({name: UnitStatus}) as they are."""
    return {"version": 1, "plugins": {"systemd": {"units": {name: unit.snapshot() for name, unit in units.items()}}}}


def drift(plans):
    """``{unit: {"fields": {field: {"desired", "actual"}}, "actions": [...]}}`` for units off their declaration.

    PLANS come from planning a document against the live units. What an apply would not change is
    not drift: an absent unit declared stopped or disabled, a unit whose start conditions are unmet.
    A unit that cannot reach its declaration is reported with ``problem`` instead of fields.
    """
    report = {}
    for plan in plans:
        if plan.problem:
            report[plan.name] = {"problem": plan.problem, "actions": [], "fields": {}}
        elif plan.actions:
            after = expected_after(plan)
            report[plan.name] = {"fields": {field: {"desired": after[field], "actual": plan.before.get(field)}
                                            for field in plan.desired if after.get(field) != plan.before.get(field)},
                                 "actions": plan.actions}
    return report
