# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each command of the host command does: the same tasks the modules run, with the host's settings.

Every command takes the parsed arguments and the host settings (config.py) and returns an
``Outcome``: the exit code, the data ``--json`` prints, and the text printed otherwise. Failures
are OpdbusErrors, which main.py turns into an exit code and a message on stderr.
"""

from __future__ import annotations

import datetime
import json
import os
import stat

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.client import BtrfsClient
from ansible_collections.opdbus.fleet.plugins.module_utils._cli import render
from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import apply_spec, scope_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._common.context import TaskContext
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import DEFAULT_LEDGER_DIR, Ledger, RunLockBusy
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.topology import SYSFS_ROOT, Topology
from ansible_collections.opdbus.fleet.plugins.module_utils._state.apply import SYSTEM_STATE_FILE
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshot_task import snapshot_task
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshots import ledger_info_task, parse_time
from ansible_collections.opdbus.fleet.plugins.module_utils._state.tasks import apply_task
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.client import SystemdClient

EXIT_OK = 0
EXIT_FAILED = 1  # a refused or failed run, a ledger that does not verify, a failed doctor check
EXIT_USAGE = 2  # argparse's own code for a command line it cannot parse
EXIT_PENDING = 3  # apply --check, rollback --check: a real run would change something


class Outcome:
    """What a command returns: EXIT code, DATA for --json, TEXT for people."""

    def __init__(self, data, text, exit_code=EXIT_OK):
        self.data = data
        self.text = text
        self.exit_code = exit_code


def paths(settings):
    """``(state_file, ledger_path)`` from the host settings, with the system defaults."""
    return settings["state_file"] or SYSTEM_STATE_FILE, settings["ledger_path"] or DEFAULT_LEDGER_DIR


def state_params(settings, **overrides):
    """The parameters of the state tasks, as the modules' argument specs default them, for this host."""
    state_file, ledger = paths(settings)
    params = scope_spec().merge(apply_spec()).defaults()
    params.update(state=None, src=state_file, state_file=state_file, ledger_path=ledger)
    params.update(overrides)
    return params


def snapshot_params(settings, **overrides):
    params = state_params(settings, state="present", id=None, label=None, units=None, retention=None,
                          btrfs_subvolumes=[], btrfs_snapshot_dir=None)
    params.update(overrides)
    return params


def ledger_params(settings, **overrides):
    params = dict(path=paths(settings)[1], since=None, limit=None, anchor=None, fail_on_invalid=False, query=None)
    params.update(overrides)
    return params


def apply(arguments, settings, context):
    """Apply the state file; with --force also take a snapshot afterwards (the guide's reconciliation).

    With --if-idle, a run already holding the run lock is left to it (op-dbus.service at boot, or
    started by the very playbook run that applies the state): that run applies the same file.
    """
    params = state_params(settings, lock_timeout=0) if arguments.if_idle else state_params(settings)
    if arguments.if_idle and Ledger(params["ledger_path"]).run_in_progress():
        # Before reading the state file, which the running apply may not have written yet.
        return Outcome({"changed": False, "skipped": "another op-dbus run holds the run lock"},
                       "another op-dbus run is applying the state; nothing to do")
    try:
        result = apply_task(params, arguments.check, context)
    except RunLockBusy as busy:
        if not arguments.if_idle:
            raise
        return Outcome({"changed": False, "skipped": str(busy)}, f"another op-dbus run is applying: {busy}")
    text = render.apply_result(result, arguments.check)
    if arguments.force and not arguments.check:
        snapshot = snapshot_task(snapshot_params(settings), False, context)
        result = dict(result, snapshot=snapshot.get("snapshot"))
        text += "\n" + render.snapshot_result(snapshot, False)
    pending = arguments.check and result["changed"]
    return Outcome(result, text, EXIT_PENDING if pending else EXIT_OK)


def snapshot(arguments, settings, context):
    """Take a snapshot of the declared units; with --prune apply the host's retention afterwards."""
    retention = None
    if arguments.prune:
        retention = settings["retention"]
        if not retention:
            raise OpdbusError("--prune needs a retention: set \"retention\" in /etc/op-dbus/config.json "
                              "(the opdbus.fleet.base role writes it from opdbus_retention)")
    result = snapshot_task(snapshot_params(settings, label=arguments.label, retention=retention), arguments.check,
                           context)
    return Outcome(result, render.snapshot_result(result, arguments.check),
                   EXIT_PENDING if arguments.check and result["changed"] else EXIT_OK)


def rollback(arguments, settings, context):
    """Bring the units back to restore point ID through the apply engine."""
    result = snapshot_task(snapshot_params(settings, state="restored", id=arguments.id), arguments.check, context)
    return Outcome(result, render.apply_result(result, arguments.check),
                   EXIT_PENDING if arguments.check and result["changed"] else EXIT_OK)


def ledger_list(arguments, settings, context):
    result = ledger_info_task(ledger_params(settings, since=arguments.since, limit=arguments.limit), True, context)
    return Outcome(result["entries"], render.entries(result["entries"]))


def ledger_show(arguments, settings, context):
    if arguments.seq < 0:
        raise OpdbusError(f"SEQ must be 0 or more, not {arguments.seq} (`opdbus ledger list --since -N` counts from the end)")
    result = ledger_info_task(ledger_params(settings, since=arguments.seq, limit=1), True, context)
    if not result["entries"] or result["entries"][0].get("seq") != arguments.seq:
        raise OpdbusError(f"the ledger has no entry {arguments.seq} (it holds {result['checkpoint']['size']})")
    entry = result["entries"][0]
    return Outcome(entry, json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False))


def ledger_verify(arguments, settings, context):
    anchor = None
    if arguments.anchor:
        try:
            with open(arguments.anchor, encoding="utf-8") as handle:
                anchor = json.load(handle)
        except (OSError, ValueError) as error:
            raise OpdbusError(f"--anchor {arguments.anchor}: cannot read a checkpoint from it: {error}") from None
    result = ledger_info_task(ledger_params(settings, anchor=anchor, limit=0), True, context)
    result.pop("entries", None)
    return Outcome(result, render.verification(result), EXIT_OK if result["valid"] else EXIT_FAILED)


def snapshots(arguments, settings, context):
    """The restore points, oldest first (``op-dbus blockchain snapshots``)."""
    result = ledger_info_task(ledger_params(settings, limit=0), True, context)
    return Outcome(result["restore_points"], render.restore_points(result["restore_points"]))


def snapshot_show(arguments, settings, context):
    """One restore point with the state it holds (``op-dbus blockchain show ID``)."""
    result = ledger_info_task(ledger_params(settings, limit=0), True, context)
    wanted = str(arguments.id)
    points = [point for point in result["restore_points"] if str(point["id"]) == wanted]
    if not points:
        known = ", ".join(str(point["id"]) for point in result["restore_points"][-10:]) or "none"
        raise OpdbusError(f"no restore point {wanted} (the newest are: {known})")
    return Outcome(points[0], json.dumps(points[0], indent=2, sort_keys=True, ensure_ascii=False))


def numa_info(arguments, settings, context):
    topology = Topology.read(SYSFS_ROOT).as_dict()
    current = current_node(topology)
    details = dict(topology, current_node=current, optimal_node=optimal_node(topology, settings, current),
                   strategy=settings["numa_strategy"] or "local-node")
    if arguments.brief:
        return Outcome(details, f"NUMA topology detected: {len(topology['node_ids'])} nodes")
    return Outcome(details, render.numa_info(details))


def numa_stats(arguments, settings, context):
    topology = Topology.read(SYSFS_ROOT).as_dict()
    return Outcome(topology["nodes"], render.numa_stats(topology))


def current_node(topology):
    """The node of the CPU this process runs on (field 39 of /proc/self/stat), or None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            cpu = int(handle.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None
    return next((node["id"] for node in topology["nodes"] if cpu in node["cpus"]), None)


def optimal_node(topology, settings, current):
    """The configured preferred node, else the node with the most free memory among those with CPUs."""
    if settings["numa_node"] is not None:
        return settings["numa_node"]
    candidates = [node for node in topology["nodes"] if node["cpus"] and node["has_memory"]]
    if not candidates:
        return current
    return max(candidates, key=lambda node: (node["memory"].get("free_kb") or 0, -node["id"]))["id"]


def doctor(arguments, settings, context):
    """The checks of the guides' troubleshooting sections, each ok, warn or fail."""
    quiet = TaskContext(warn=lambda message: None, run=context.run, find=context.find_program)
    ledger, report = check_ledger(settings, quiet)
    checks = [check_dbus(), ledger, check_btrfs(settings, quiet), check_snapshot_age(report), check_numa()]
    failed = any(check["status"] == "fail" for check in checks)
    return Outcome(checks, render.checks(checks), EXIT_FAILED if failed else EXIT_OK)


def _check(name, status, detail):
    return {"check": name, "status": status, "detail": detail}


def check_dbus():
    try:
        return _check("dbus", "ok", f"systemd {SystemdClient().version()} answers on the system bus")
    except OpdbusError as error:
        return _check("dbus", "fail", str(error))


def check_ledger(settings, context):
    """``(check, report)``: the ledger directory's permissions and its verification; the report (None when
    the ledger could not be read) also serves the snapshot check, so the ledger is verified once."""
    directory = paths(settings)[1]
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        return _check("ledger", "fail", f"{directory} does not exist: nothing was ever applied or recorded here"), None
    except OSError as error:
        return _check("ledger", "fail", f"cannot look up {directory}: {error.strerror}; run as root"), None
    if not stat.S_ISDIR(info.st_mode):
        return _check("ledger", "fail", f"{directory} is not a directory"), None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != 0 or mode & 0o077:
        return _check("ledger", "fail", f"{directory} is owned by uid {info.st_uid} with mode {mode:04o}; "
                                        "it must be root's and private (chown root: and chmod 0700)"), None
    try:
        report = ledger_info_task(ledger_params(settings, limit=0), True, context)
    except OpdbusError as error:
        return _check("ledger", "fail", str(error)), None
    if not report["valid"]:
        problem = report["problems"][0]
        return _check("ledger", "fail", f"does not verify: {problem['kind']}: {problem['detail']}"), report
    size = report["checkpoint"]["size"]
    return _check("ledger", "ok", f"{directory}: {size} entries, verified, mode {mode:04o}"), report


def check_btrfs(settings, context):
    directory = os.path.realpath(paths(settings)[1])
    try:
        # The mount of the directory, or of its nearest existing ancestor when it does not exist yet.
        mount = BtrfsClient(context.run, context.find_program).inspect(directory).mount
    except OpdbusError as error:
        return _check("btrfs", "warn", str(error))
    if mount is None or mount.fstype != "btrfs":
        fstype = mount.fstype if mount else "unknown"
        return _check("btrfs", "warn", f"{directory} is on {fstype}, not BTRFS: the ledger works, but BTRFS "
                                       "snapshots of subvolumes need a BTRFS mount")
    return _check("btrfs", "ok", f"{directory} is on BTRFS (mounted at {mount.mount_point})")


def check_snapshot_age(report):
    """How old the newest snapshot is, from the ledger REPORT (None: the ledger check failed)."""
    if report is None:
        return _check("snapshot", "fail", "the ledger could not be read (see the ledger check)")
    taken = [point for point in report["restore_points"] if point["kind"] == "snapshot"]
    if not taken:
        return _check("snapshot", "warn", "no snapshot taken yet (is op-dbus-snapshot.timer enabled?)")
    age = datetime.datetime.now(datetime.timezone.utc) - parse_time(taken[-1]["time"])
    seconds = int(age.total_seconds())
    status = "ok" if seconds < 3600 else "warn"
    return _check("snapshot", status, f"newest snapshot {taken[-1]['id']} is {seconds} s old")


def check_numa():
    try:
        topology = Topology.read(SYSFS_ROOT).as_dict()
    except OpdbusError as error:
        return _check("numa", "warn", f"{error}; placement falls back to one node")
    nodes = len(topology["node_ids"])
    if not topology["numa_supported"]:
        return _check("numa", "ok", "NUMA topology detected: 1 nodes (the kernel has no NUMA support)")
    return _check("numa", "ok", f"NUMA topology detected: {nodes} nodes")
