# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A client for systemd's D-Bus API (org.freedesktop.systemd1), shared by every module.

One bus connection per module run. Reads are batched: ``ListUnitsByNames`` loads and reports every
requested unit in one round trip (unlike ``GetUnit`` it also answers for units that are not loaded),
and the few per-unit properties it does not carry are fetched with pipelined calls, all sent before
the first reply is awaited. Without a GLib main loop dbus-python cannot receive signals, so jobs are
waited for by polling ``ListJobs``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from ansible_collections.opdbus.fleet.plugins.module_utils._common.context import find_program
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import xdg_home
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.conditions import condition_text, evaluate_conditions
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.units import (
    RUNTIME_UNIT_TYPES, UNRESTORABLE_FILE_STATES, SYSTEM_CONFIG_DIR, JobFacts, UnitStatus)


try:
    import dbus
    import dbus.lowlevel
except ImportError:
    dbus = None
SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT = 25.0

# dbus-daemon refuses more than max_replies_per_connection (128 on the system bus) calls awaiting
# replies on one connection, so pipelined calls go out in windows of this many.
PIPELINE_WINDOW = 64


class SystemdError(OpdbusError):
    """A D-Bus or systemd failure, with a message a user can act on."""


class SystemdClient:
    """Talks to the system manager (scope ``system``) or the calling user's manager (``user``)."""

    def __init__(self, scope="system"):
        self.scope = scope
        try:
            if scope == "user":
                self.bus = dbus.bus.BusConnection(_user_bus_address())
            else:
                self.bus = dbus.SystemBus(private=True)
        except dbus.DBusException as error:
            raise SystemdError(
                f"cannot connect to the {scope} bus: {error.get_dbus_message()}. "
                + ("Is the user's systemd instance running (loginctl enable-linger USER)?" if scope == "user"
                   else "Is dbus running on this host (systemctl status dbus)?")
            ) from None

    # ------------------------------------------------------------------ low level
    def _message(self, path, interface, method, signature=None, *args):
        message = dbus.lowlevel.MethodCallMessage(SYSTEMD_BUS_NAME, path, interface, method)
        if signature:
            message.append(signature=signature, *args)
        return message

    def _call(self, method, signature=None, *args):
        """One blocking call on the manager object; returns the reply's arguments."""
        try:
            message = self._message(SYSTEMD_PATH, MANAGER_INTERFACE, method, signature, *args)
            reply = self.bus.send_message_with_reply_and_block(message, CALL_TIMEOUT)
        except dbus.DBusException as error:
            raise SystemdError(f"{method}: {error.get_dbus_message()}") from None
        return reply.get_args_list()

    def _pipelined(self, messages):
        """Send calls without waiting for each reply; returns replies (or DBusExceptions) in order.

        A reply that is an error comes back as a DBusException for the caller to attribute; the
        connection itself failing (the bus went away) is a SystemdError.
        """
        try:
            return self._send_pipelined(messages)
        except dbus.DBusException as error:
            raise SystemdError(f"the D-Bus connection to systemd failed: {error.get_dbus_message()}") from None

    def _send_pipelined(self, messages):
        replies = [None] * len(messages)

        def keep(index):
            def handler(reply):
                replies[index] = reply
            return handler

        for start in range(0, len(messages), PIPELINE_WINDOW):
            window = messages[start:start + PIPELINE_WINDOW]
            pending = [self.bus.send_message_with_reply(message, keep(start + offset), CALL_TIMEOUT)
                       for offset, message in enumerate(window)]
            for call in pending:
                call.block()
        results = []
        for reply in replies:
            if isinstance(reply, dbus.lowlevel.ErrorMessage):
                arguments = reply.get_args_list()
                results.append(dbus.DBusException(arguments[0] if arguments else "", name=reply.get_error_name()))
            else:
                arguments = reply.get_args_list()
                results.append(arguments[0] if arguments else None)
        return results

    def _get_properties(self, requests):
        """Pipelined Properties.Get of ``(object path, interface, property)`` triples: values or DBusExceptions."""
        return self._pipelined([self._message(path, PROPERTIES_INTERFACE, "Get", "ss", interface, name)
                                for path, interface, name in requests])

    # ------------------------------------------------------------------ reads
    def read_units(self, names):
        """Status of each named unit, loading units that are not loaded; ordered as NAMES."""
        if not names:
            return {}
        rows = self._call("ListUnitsByNames", "as", dbus.Array(names, signature="s"))[0]
        units = {}
        for row in rows:
            name = str(row[0])
            units[name] = UnitStatus(name, str(row[2]), str(row[3]), str(row[4]), str(row[6]))
        self._fill_unit_file_states(list(units.values()))
        return {name: units[name] for name in names if name in units}

    def _unit_property_values(self, units, name):
        """One Unit property of every unit; a unit whose read fails is an error, never a default."""
        values = self._get_properties([(unit.object_path, UNIT_INTERFACE, name) for unit in units])
        for unit, value in zip(units, values):
            if isinstance(value, Exception):
                raise SystemdError(f"reading {name} of {unit.name}: {value.get_dbus_message()}")
        return values

    def _fill_unit_file_states(self, units):
        for unit, state in zip(units, self._unit_property_values(units, "UnitFileState")):
            unit.unit_file_state = str(state)

    def fill_need_daemon_reload(self, units):
        """Read NeedDaemonReload of UNITS (read_units leaves it out: only pending jobs need it)."""
        for unit, flag in zip(units, self._unit_property_values(units, "NeedDaemonReload")):
            unit.need_daemon_reload = bool(flag)

    def fill_job_facts(self, units):
        """Read what decides whether systemd would run the start or stop jobs of UNITS."""
        names = ("ConditionResult", "ConditionTimestampMonotonic", "Conditions", "RefuseManualStart",
                 "RefuseManualStop")
        values = self._get_properties([(unit.object_path, UNIT_INTERFACE, name) for unit in units for name in names])
        for index, unit in enumerate(units):
            row = values[index * len(names):(index + 1) * len(names)]
            failed = next((value for value in row if isinstance(value, Exception)), None)
            if failed is not None:
                raise SystemdError(f"reading the start conditions of {unit.name}: {failed.get_dbus_message()}")
            result, timestamp, conditions, refuse_start, refuse_stop = row
            # Each condition's own result lasts only until the next daemon-reload, the overall one
            # as long as the unit stays loaded: without the former, name every condition.
            failed = [condition for condition in conditions if int(condition[4]) < 0] or conditions
            unmet = [condition_text(str(kind), bool(trigger), bool(negate), str(parameter))
                     for kind, trigger, negate, parameter, _state in failed]
            unit.job_facts = JobFacts(bool(result), int(timestamp) > 0, unmet, bool(refuse_start), bool(refuse_stop))
            if conditions and not unit.job_facts.condition_checked:
                rows = [(str(kind), bool(trigger), bool(negate), str(parameter))
                        for kind, trigger, negate, parameter, _state in conditions]
                evaluated = evaluate_conditions(rows)
                if evaluated is None:
                    self._evaluate_conditions(unit)
                else:
                    unit.job_facts = JobFacts(evaluated[0], True, evaluated[1], bool(refuse_start), bool(refuse_stop))

    def _evaluate_conditions(self, unit):
        """Have systemd evaluate the start conditions of UNIT, which it has not evaluated since it was
        loaded (it unloads a unit whose start it skipped once nothing refers to it), so that planning
        (and check mode) knows whether a start would run: for the kinds conditions.py does not
        evaluate itself. ``systemd-analyze condition --unit`` needs
        systemd 249; without it the conditions stay unknown and a start is planned."""
        program = find_program("systemd-analyze")
        if program is None:
            return
        argv = [program] + (["--user"] if self.scope == "user" else []) + ["condition", f"--unit={unit.name}"]
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_TIMEOUT,
                                    check=False, env=dict(os.environ, LC_ALL="C"))
        except (OSError, subprocess.SubprocessError):
            return
        output = result.stdout + result.stderr
        if "Conditions failed." not in output and "Conditions succeeded." not in output:
            return  # an older systemd, or a unit it could not load: unknown
        facts = unit.job_facts
        prefix = f"{unit.name}: "
        unmet = [line[len(prefix):-len(" failed.")] for line in output.splitlines()
                 if line.startswith(prefix) and line.endswith(" failed.") and line[len(prefix):].startswith("Condition")]
        succeeded = "Conditions failed." not in output
        unit.job_facts = JobFacts(succeeded, True, [] if succeeded else unmet, facts.refuse_start, facts.refuse_stop)

    def config_dir(self):
        """The directory where this scope's administrator unit files and masks live."""
        if self.scope == "system":
            return SYSTEM_CONFIG_DIR
        return os.path.join(xdg_home("XDG_CONFIG_HOME"), "systemd", "user")

    def fill_own_files(self, units):
        """Note the administrator's own file of each of UNITS: a file (or a symlink other than a
        mask) in the config directory, where MaskUnitFiles would have to write its symlink."""
        directory = self.config_dir()
        for unit in units:
            path = os.path.join(directory, unit.name)
            try:
                if not (os.path.islink(path) and os.readlink(path) == "/dev/null"):
                    os.lstat(path)
                    unit.own_file = path
            except OSError:
                unit.own_file = None

    def version(self):
        """The manager's major version as a number (252 for "252.39-1~deb12u2")."""
        value = self._get_properties([(SYSTEMD_PATH, MANAGER_INTERFACE, "Version")])[0]
        if isinstance(value, Exception):
            raise SystemdError(f"reading systemd's Version: {value.get_dbus_message()}")
        text = str(value)
        digits = re.match(r"\d+", text)
        if not digits:
            raise SystemdError(f"cannot read systemd's version from {text!r}")
        return int(digits.group())

    def all_unit_names(self):
        """Every unit systemd knows: loaded units and installed unit files (templates excluded)."""
        names = {str(row[0]) for row in self._call("ListUnits")[0]}
        for path, _state in self._call("ListUnitFiles")[0]:
            name = os.path.basename(str(path))
            if "@." not in name:  # a template is not a unit until it has an instance
                names.add(name)
        return sorted(names)

    def restorable_units(self):
        """``{name: UnitStatus}`` of the units a snapshot can bring back: loaded units that have
        unit files. Scopes, slices, devices, transient, generated, alias and not-found units are
        left out: they exist only while something else makes them, and no apply can restore them."""
        live = self.read_units(self.all_unit_names())
        return {name: unit for name, unit in live.items()
                if unit.load_state in ("loaded", "masked") and unit.unit_file_state not in UNRESTORABLE_FILE_STATES
                and not name.endswith(tuple("." + kind for kind in RUNTIME_UNIT_TYPES))}

    def failure_details(self, unit):
        """Why a unit is not running, as ``key=value`` words: its start conditions and, for services, Result."""
        names = ("ConditionResult", "ConditionTimestampMonotonic", "AssertResult", "AssertTimestampMonotonic")
        queries = [(UNIT_INTERFACE, name) for name in names]
        if unit.name.endswith(".service"):
            queries.append((SERVICE_INTERFACE, "Result"))
        replies = self._get_properties([(unit.object_path, interface, name) for interface, name in queries])
        values = {name: reply for (_interface, name), reply in zip(queries, replies) if not isinstance(reply, Exception)}
        details = []
        # A result counts only once systemd has evaluated it (both default to false until then).
        if values.get("ConditionTimestampMonotonic") and not values.get("ConditionResult", True):
            details.append("a start condition was not met (see systemctl status)")
        if values.get("AssertTimestampMonotonic") and not values.get("AssertResult", True):
            details.append("a start assertion failed")
        if "Result" in values:
            details.append(f"result={values['Result']}")
        return details

    # ------------------------------------------------------------------ unit files
    def _unit_file_call(self, method, names, *flags):
        """Run one of the *UnitFiles methods for all NAMES; returns its change list as dicts."""
        signature = "as" + "b" * len(flags)
        reply = self._call(method, signature, dbus.Array(names, signature="s"), *flags)
        changes = reply[-1]
        return [{"type": str(kind), "file": str(path), "destination": str(dest)} for kind, path, dest in changes]

    def enable(self, names):
        return self._unit_file_call("EnableUnitFiles", names, False, False)

    def disable(self, names):
        return self._unit_file_call("DisableUnitFiles", names, False)

    def mask(self, names):
        return self._unit_file_call("MaskUnitFiles", names, False, False)

    def unmask(self, names):
        return self._unit_file_call("UnmaskUnitFiles", names, False)

    def reload(self):
        """daemon-reload; systemd replies once the reload is complete."""
        self._call("Reload")

    # ------------------------------------------------------------------ jobs
    def run_jobs(self, requests, timeout, object_paths=None):
        """Queue ``(unit name, "start"|"stop"|"restart")`` jobs in mode ``replace``; wait until all finished.

        OBJECT_PATHS are units to keep loaded for this connection's lifetime (see below).

        Returns ``{unit name: error message}`` for jobs that could not be queued or did not finish
        within TIMEOUT seconds; the caller judges success by re-reading the units' states.
        """
        methods = {"start": "StartUnit", "stop": "StopUnit", "restart": "RestartUnit"}
        # A unit nothing references is unloaded soon after a start that its conditions skipped,
        # and with it the condition result the caller reads next. A bus client's Ref keeps it
        # loaded until this connection closes (systemd >= 235; older ones answer with an error).
        references = [self._message(path, UNIT_INTERFACE, "Ref") for path in object_paths or ()]
        messages = references + [self._message(SYSTEMD_PATH, MANAGER_INTERFACE, methods[verb], "ss", name, "replace")
                                 for name, verb in requests]
        errors = {}
        jobs = {}
        for (name, verb), reply in zip(requests, self._pipelined(messages)[len(references):]):
            if isinstance(reply, Exception):
                errors[name] = f"{verb} refused: {reply.get_dbus_message()}"
            else:
                jobs[str(reply)] = name
        deadline = time.monotonic() + timeout
        delay = 0.005
        while jobs:
            running = {str(job[4]) for job in self._call("ListJobs")[0]}
            for path in [path for path in jobs if path not in running]:
                del jobs[path]
            if not jobs:
                break
            if time.monotonic() > deadline:
                for name in jobs.values():
                    errors[name] = f"job did not finish within {timeout} s"
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return errors


def _user_bus_address():
    """The bus of the user this runs as. Environment variables count only when they point at that
    user's own socket: become methods such as su pass the caller's through."""
    uid = os.getuid()
    candidates = []
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address.startswith("unix:path="):
        candidates.append(address[len("unix:path="):].split(",", 1)[0])
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "bus"))
    for path in candidates:
        try:
            if os.stat(path).st_uid == uid:
                return f"unix:path={path}"
        except OSError:
            continue
    return f"unix:path=/run/user/{uid}/bus"
