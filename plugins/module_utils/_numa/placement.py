# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The placement of systemd units on NUMA nodes.

``plan_placements`` turns a strategy per unit into the values of systemd's ``CPUAffinity=``,
``NUMAPolicy=`` and ``NUMAMask=`` (systemd 243 or later), checking every unit before anything is
written. ``DropinSet`` compares those drop-ins with the files on disk. ``place_units`` runs a whole
opdbus_numa task: it plans under the ledger's run lock, writes or removes the drop-ins, makes
systemd load them through the shared D-Bus client, and records the run in the ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError, describe_os_error
from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import atomic_write, read_text
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import ledger_from_params
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.topology import (
    NumaError,
    Topology,
    id_list,
    format_list,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import unit_name_problem
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.client import SystemdClient


UNIT_DIR = "/etc/systemd/system"
DEFAULT_DROPIN = "50-opdbus-numa.conf"
STRATEGIES = ("local-node", "bind", "preferred", "interleave", "default")

# The policies systemd applies NUMAMask= to; it ignores the mask for default and local.
MASK_POLICIES = ("bind", "preferred", "interleave")
UNIT_FIELDS = ("strategy", "nodes", "device", "cpus")

# Unit types that run processes, and the section their exec settings (systemd.exec) go in.
EXEC_SECTIONS = {"service": "Service", "socket": "Socket", "mount": "Mount", "swap": "Swap"}
DROPIN_NAME = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]*\.conf$")


# ---------------------------------------------------------------------------------- placement
def unit_field(name, field=None):
    path = f'units["{name}"]'
    return f"{path}.{field}" if field else path


class Placement:
    """Where one unit runs: its CPUs and its memory policy, and the drop-in that says so."""

    __slots__ = ("unit", "strategy", "nodes", "cpus", "policy", "notes")

    def __init__(self, unit, strategy, nodes, cpus, policy, notes):
        self.unit = unit
        self.strategy = strategy
        self.nodes = nodes
        self.cpus = cpus
        self.policy = policy
        self.notes = notes

    @property
    def mask(self):
        """NUMAMask=: the nodes, for the policies systemd applies a mask to."""
        return self.nodes if self.policy in MASK_POLICIES else None

    def dropin(self):
        where = f", nodes {format_list(self.nodes)}" if self.nodes else ""
        lines = [f"# Written by opdbus.fleet.opdbus_numa (strategy {self.strategy}{where}).",
                 "# CPUAffinity= and NUMAMask= add up across the unit and its drop-ins: the empty",
                 "# assignments discard earlier values, so this file alone decides.",
                 f"[{EXEC_SECTIONS[self.unit.rsplit('.', 1)[1]]}]",
                 "CPUAffinity="]
        if self.cpus:
            lines.append(f"CPUAffinity={format_list(self.cpus)}")
        if self.policy:
            lines += [f"NUMAPolicy={self.policy}", "NUMAMask="]
        if self.mask:
            lines.append(f"NUMAMask={format_list(self.mask)}")
        return "\n".join(lines) + "\n"

    def settings(self):
        """What the drop-in sets, as the ledger records it."""
        return {"strategy": self.strategy, "nodes": self.nodes, "cpus": self.cpus, "policy": self.policy,
                "mask": self.mask}

    def as_dict(self):
        return dict(self.settings(), notes=self.notes)


def check_unit_names(names):
    """Raise NumaError for the first name that is not a unit this module can place."""
    for name in names:
        problem = unit_name_problem(name)
        if problem is None and name.rsplit(".", 1)[1] not in EXEC_SECTIONS:
            problem = "only units that run processes can be placed (" + ", ".join(EXEC_SECTIONS) + ")"
        if problem:
            raise NumaError(f"{unit_field(name)}: {problem}")


def check_dropin_name(name):
    if not DROPIN_NAME.fullmatch(name):
        raise NumaError(f"dropin_name: {name!r} must be a file name ending in .conf (systemd reads only those)")
    if len(name.encode("utf-8")) > 255:
        raise NumaError(f"dropin_name: {name[:40]!r}... is longer than the 255 bytes a file name can have")


def plan_placements(topology, units, live):
    """``{unit: Placement}`` for ``{unit: {strategy, nodes | device, cpus}}``; raises NumaError on any problem.

    LIVE is what systemd reports for the units (``read_units``, after ``check_unit_names``): each must exist.
    """
    placements = {}
    for name, spec in units.items():
        if name not in live or not live[name].exists:
            raise NumaError(f"{unit_field(name)}: no such unit on this host (systemd reports it not-found)")
        placements[name] = _plan_unit(topology, name, spec)
    return placements


def _problem(name, field, message):
    return NumaError(f"{unit_field(name, field)}: {message}")


def _plan_unit(topology, name, spec):
    if not isinstance(spec, dict):
        raise _problem(name, None, "expected a mapping with strategy and nodes, device or cpus")
    unknown = sorted(set(spec) - set(UNIT_FIELDS))
    if unknown:
        raise _problem(name, unknown[0], "unknown field (known: " + ", ".join(UNIT_FIELDS) + ")")
    strategy = spec.get("strategy")
    if strategy not in STRATEGIES:
        raise _problem(name, "strategy", f"expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    given = [field for field in ("nodes", "device") if spec.get(field) is not None]
    if len(given) > 1:
        raise _problem(name, "device", "give nodes or device, not both")
    if strategy == "default" and given:
        raise _problem(name, given[0], "strategy default places the unit on no node; leave it out")

    notes = []
    nodes, policy = _choose_nodes(topology, name, spec, strategy, notes)
    if policy == "preferred" and len(nodes) != 1:
        raise _problem(name, "nodes", "strategy preferred takes exactly one node (systemd's preferred policy names one node)")
    if policy in MASK_POLICIES:
        memoryless = [node for node in nodes if not topology.nodes[node].has_memory]
        if memoryless:
            raise _problem(name, "nodes", f"node {format_list(memoryless)} has no memory for NUMAPolicy={policy}")
    cpus = _choose_cpus(topology, name, spec, nodes)

    if not topology.numa_supported:
        policy = None
        notes.append("this kernel has no NUMA support: only CPUAffinity= is written")
    elif len(topology.nodes) == 1 and policy != "default":
        notes.append(f"this host has one NUMA node, so NUMAPolicy={policy} changes nothing; CPUAffinity= still applies")
    return Placement(name, strategy, nodes, cpus, policy, notes)


def _choose_nodes(topology, name, spec, strategy, notes):
    """The nodes a unit goes on, from ``nodes``, ``device`` or the strategy, and the NUMA policy."""
    # local-node pins the CPUs to the nodes and lets the kernel allocate on the node the unit runs
    # on (NUMAPolicy=local), so memory is local without failing when that node is full. The other
    # strategies are systemd's policies of the same name.
    policy = "local" if strategy == "local-node" else strategy
    if spec.get("nodes") is not None:
        try:
            nodes = id_list(spec["nodes"])
        except ValueError as error:
            raise _problem(name, "nodes", str(error)) from None
        missing = [node for node in nodes if node not in topology.nodes]
        if missing:
            raise _problem(name, "nodes", f"node {format_list(missing)} does not exist on this host "
                                          f"(nodes: {format_list(topology.node_ids)})")
        return nodes, policy
    if spec.get("device") is not None:
        reference = spec["device"]
        device = topology.find_device(reference)
        if device is None:
            raise _problem(name, "device", f"no device {reference!r} on this host ({topology.device_summary()})")
        node = topology.recommended_node(device)
        if node is None:
            # Equally near every node: no node is better, so the unit keeps the kernel's defaults.
            notes.append(f"{reference} ({device.address}) is on no particular NUMA node (numa_node is -1): "
                         "the unit is not placed on a node")
            return [], "default"
        if device.node is None:
            notes.append(f"{reference} ({device.address}) reports no NUMA node; node {node} is this host's only node")
        elif node != device.node:
            notes.append(f"{reference} is on node {device.node}, which lacks CPUs or memory; "
                         f"node {node} is the nearest node that has both")
        return [node], policy
    if strategy == "interleave":
        return [node.id for node in topology.nodes.values() if node.has_memory], policy
    if strategy != "default":
        raise _problem(name, "nodes", f"strategy {strategy} needs nodes or a device")
    return [], policy


def _choose_cpus(topology, name, spec, nodes):
    """The CPUs of NODES, or the ``cpus`` override, which must lie on the host and on those nodes."""
    node_cpus = topology.cpus_of(nodes)
    if nodes and not node_cpus:
        raise _problem(name, "nodes", f"node {format_list(nodes)} has no CPUs to run the unit on")
    if spec.get("cpus") is None:
        return node_cpus
    try:
        cpus = id_list(spec["cpus"])
    except ValueError as error:
        raise _problem(name, "cpus", str(error)) from None
    outside = sorted(set(cpus) - set(topology.cpus))
    if outside:
        raise _problem(name, "cpus", f"CPU {format_list(outside)} is not on this host (CPUs: {format_list(topology.cpus)})")
    outside = sorted(set(cpus) - set(node_cpus)) if nodes else []
    if outside:
        raise _problem(name, "cpus", f"CPU {format_list(outside)} is not on node {format_list(nodes)} "
                                     f"(its CPUs: {format_list(node_cpus)})")
    return cpus


# ---------------------------------------------------------------------------------- drop-ins
def text_sha256(text):
    """SHA-256 (hex) of a drop-in's bytes on disk, as ``sha256sum`` prints it; None for no file."""
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


class Dropin:
    """One unit's drop-in: its text on disk (None: no file) and the text it should have (None: remove)."""

    __slots__ = ("unit", "path", "before", "after")

    def __init__(self, unit, path, before, after):
        self.unit = unit
        self.path = path
        self.before = before
        self.after = after

    @property
    def changed(self):
        return self.before != self.after

    def diff(self):
        return {"before_header": self.path, "after_header": self.path,
                "before": self.before or "", "after": self.after or ""}

    def write(self):
        """Make the file hold ``after``: replaced in one rename, or removed."""
        try:
            if self.after is None:
                # Gone already (removed by hand since planning) is what was asked for.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            else:
                atomic_write(self.path, self.after.encode("utf-8"), 0o644)
        except OSError as error:
            verb = "remove" if self.after is None else "write"
            raise NumaError(f"{unit_field(self.unit)}: cannot {verb} {self.path}: {describe_os_error(error)}") from None


class DropinSet:
    """The drop-ins of one run, compared with the files on disk; ``changed`` are those to write or remove."""

    def __init__(self, contents, dropin_name, unit_dir=UNIT_DIR):
        self.dropins = []
        for unit, text in contents.items():
            path = os.path.join(unit_dir, unit + ".d", dropin_name)
            try:
                before = read_text(path)
            except (OSError, UnicodeDecodeError) as error:
                reason = describe_os_error(error) if isinstance(error, OSError) else "it is not UTF-8 text"
                raise NumaError(f"{unit_field(unit)}: cannot read {path}: {reason}") from None
            self.dropins.append(Dropin(unit, path, before, text))

    @property
    def changed(self):
        return [dropin for dropin in self.dropins if dropin.changed]


# systemd learned NUMAPolicy= and NUMAMask= in 243; older versions ignore them with only a log line.
MIN_SYSTEMD_VERSION = 243


def check_systemd_version(version):
    if version < MIN_SYSTEMD_VERSION:
        raise NumaError(f"systemd {version} on this host ignores NUMAPolicy= and NUMAMask= (they need "
                        f"{MIN_SYSTEMD_VERSION} or later); nothing was written")


def restart_units(client, names, job_timeout):
    """Restart NAMES in one batch and wait for them; ``{unit: problem}`` for each not running afterwards."""
    errors = client.run_jobs([(name, "restart") for name in names], job_timeout)
    failures = {}
    for name, unit in client.read_units(names).items():
        if not unit.running or name in errors:
            details = [errors[name]] if name in errors else []
            details += [f"active_state={unit.active_state}", f"sub_state={unit.sub_state}"]
            details += client.failure_details(unit)
            failures[name] = f"{unit_field(name)}: restart failed: {', '.join(details)}; see `journalctl -u {name}`"
    return failures


# ---------------------------------------------------------------------------------- one task
NUMA_ACTION = "numa"  # the ledger action of an opdbus_numa run


class PlacementRun:
    """One opdbus_numa task: ``plan`` reads everything and decides, ``execute`` changes the host
    and keeps the ledger's ``progress`` current after every step, ``result`` is the task result."""

    def __init__(self, client, params):
        self.client = client
        self.params = params
        self.present = params["state"] == "present"
        self.placements = {}
        self.dropins = None  # a DropinSet, once planned
        self.unloaded = []
        self.changed_units = []
        self.restart = []
        self.failures = {}

    def plan(self):
        """Read the units, the topology and the drop-ins; raises NumaError before anything changes."""
        units = self.params["units"]
        live = self.client.read_units(list(units))
        if self.present:
            check_systemd_version(self.client.version())
            self.placements = plan_placements(Topology.read(self.params["sysfs_root"]), units, live)
        self.dropins = DropinSet({name: self.placements[name].dropin() if self.present else None for name in units},
                                 self.params["dropin_name"])
        written = [dropin.unit for dropin in self.dropins.changed]
        # A drop-in already right on disk that systemd has not loaded (an earlier run failed before
        # its reload) still needs the reload, and the restart.
        unchanged = [live[name] for name in units if name not in written and name in live]
        self.client.fill_need_daemon_reload(unchanged)
        self.unloaded = [unit.name for unit in unchanged if unit.need_daemon_reload]
        self.changed_units = written + self.unloaded
        self.restart = [name for name in self.changed_units
                        if self.params["restart"] and name in live and live[name].running]

    def planned(self):
        """The run's intent, in the order ``execute`` takes the steps."""
        return ([{"unit": dropin.unit, "action": "remove_dropin" if dropin.after is None else "write_dropin"}
                 for dropin in self.dropins.changed]
                + ["daemon_reload"] + [{"unit": name, "action": "restart"} for name in self.restart])

    def execute(self, progress, job_timeout):
        """Write the drop-ins, reload, restart. PROGRESS is the outcome entry's changes so far."""
        progress.update(state=self.params["state"], units=[], daemon_reload=False)
        for dropin in self.dropins.changed:
            dropin.write()
            progress["units"].append(self._record(dropin, written=True))
        unloaded = [dropin for dropin in self.dropins.dropins if dropin.unit in self.unloaded]
        progress["units"] += [self._record(dropin, written=False) for dropin in unloaded]
        self.client.reload()
        progress["daemon_reload"] = True
        if not self.restart:
            return
        progress["restart_requested"] = list(self.restart)
        self.failures = restart_units(self.client, self.restart, job_timeout)
        for record in progress["units"]:
            record["restarted"] = record["unit"] in self.restart and record["unit"] not in self.failures
        if self.failures:
            progress["failed_units"] = self.failures

    def _record(self, dropin, written):
        """What the ledger keeps of one unit: enough to tell which file the unit ran with, and where."""
        placement = self.placements.get(dropin.unit)
        return {"unit": dropin.unit, "path": dropin.path, "written": written,
                "before_sha256": text_sha256(dropin.before), "after_sha256": text_sha256(dropin.after),
                "placement": placement.settings() if placement else None, "restarted": False}

    def result(self):
        units = {}
        for dropin in self.dropins.dropins:
            units[dropin.unit] = dict(path=dropin.path, changed=dropin.unit in self.changed_units,
                                      restarted=dropin.unit in self.restart and dropin.unit not in self.failures)
            if self.present:
                units[dropin.unit].update(self.placements[dropin.unit].as_dict())
        return dict(
            changed=bool(self.changed_units),
            units=units,
            notes=[f"{name}: {note}" for name, placement in self.placements.items() for note in placement.notes]
            + [f"{name}: systemd had not loaded the drop-in yet; reloaded" for name in self.unloaded],
            diff=[dropin.diff() for dropin in self.dropins.changed],
        )


def place_units(client, ledger, params, check_mode, warn):
    """Run an opdbus_numa task with PARAMS (the module's options) against CLIENT (a SystemdClient).

    Planned under LEDGER's run lock; a run that changes something records an intent before its first
    write and one ``numa`` outcome after the last step, also when a step fails. Returns the task
    result; raises OpdbusError, whose ``details`` say whether the host changed and name the entry.
    WARN receives the warnings of the run (an interrupted earlier run, a wait for the lock).
    """
    placement = PlacementRun(client, params)
    run = RecordedRun(ledger, NUMA_ACTION, check_mode=check_mode, lock_timeout=params["lock_timeout"])
    try:
        check_dropin_name(params["dropin_name"])
        check_unit_names(params["units"])
        if params["job_timeout"] < 1:
            raise NumaError(f"job_timeout: {params['job_timeout']} is not a number of seconds to wait (1 or more)")
        with run:
            placement.plan()
            if placement.changed_units and not check_mode:
                run.intend(placement.planned())
                placement.execute(run.progress, params["job_timeout"])
                if placement.failures:
                    raise NumaError("units did not come back after the restart: "
                                    + "; ".join(placement.failures.values()),
                                    failed_units=placement.failures, **placement.result())
                run.record(run.progress)
    except OpdbusError as error:
        done = run.progress
        error.details.update(changed=done.get("daemon_reload", False)
                             or any(record["written"] for record in done.get("units", ())), entry=run.entry)
        raise
    finally:
        for warning in run.warnings:
            warn(warning)
    return dict(placement.result(), entry=run.entry)


def placement_task(params, check_mode, context):
    """opdbus_numa: write or remove the units' placement drop-ins, as PARAMS declare, recorded in the ledger."""
    ledger = ledger_from_params(params)
    return place_units(SystemdClient(), ledger, params, check_mode, context.warn)
