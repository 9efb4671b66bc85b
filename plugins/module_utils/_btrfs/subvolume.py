# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The btrfs_subvolume task: what it plans, does and records in the ledger (check mode predicts it)."""

from __future__ import annotations

import collections
import os

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.client import BtrfsClient
from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.info import describe_subvolume, normalise_path, require_btrfs
from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.parse import BtrfsError, TOP_LEVEL_ID
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import ledger_from_params


Step = collections.namedtuple("Step", "action run deletes")
Step.__doc__ = """One change: ``action`` as reported, ``run`` does it; ``deletes`` is the identity of the
subvolume a delete step removes (what the ledger keeps of it), else None."""


class Plan:
    """The steps that bring one subvolume to its desired state, and its state before and after them.

    Check mode reports the plan and a real run applies it, so both report the same ``actions``;
    ``before`` and ``after`` are what diff mode shows. ``subvolume`` is the existing subvolume as
    :func:`describe_subvolume` found it while planning (None when it does not exist yet).
    """

    def __init__(self, before, subvolume=None):
        self.before = before
        self.after = dict(before)
        self.subvolume = subvolume
        self.steps = []

    def add(self, run, deletes=None, **action):
        self.steps.append(Step(action, run, deletes))

    @property
    def actions(self):
        return [step.action for step in self.steps]

    def apply(self, progress):
        """Run the steps in order, recording each finished one in PROGRESS: its action under
        ``actions`` and, for a delete, the identity of the deleted subvolume under ``deleted``."""
        for step in self.steps:
            step.run()
            progress["actions"].append(step.action)
            if step.deletes is not None:
                progress["deleted"].append(step.deletes)


REQUEST_OPTIONS = ("path", "state", "snapshot_source", "read_only", "compression", "default", "recursive")


def subvolume_request(path, state="present", snapshot_source=None, read_only=None, compression=None,
                      default=None, recursive=False):
    """The options of a btrfs_subvolume task, checked on their own (before any lock is taken or any
    BTRFS command runs), with the paths normalised: the keyword arguments of :func:`plan_subvolume`."""
    if state == "absent":
        given = [name for name, value in (("snapshot_source", snapshot_source), ("read_only", read_only),
                                          ("compression", compression), ("default", default)) if value is not None]
        if given:
            raise BtrfsError(f"{', '.join(given)} only apply to state=present")
    return {"path": normalise_path(path), "state": state,
            "snapshot_source": None if snapshot_source is None else normalise_path(snapshot_source, "snapshot_source"),
            "read_only": read_only, "compression": compression, "default": default, "recursive": recursive}


def plan_subvolume(client, path, state="present", snapshot_source=None, read_only=None, compression=None,
                   default=None, recursive=False):
    """Validate a btrfs_subvolume request (from :func:`subvolume_request`) against the filesystem
    and return its :class:`Plan`.

    Options left at None are not managed. Raises :class:`BtrfsError` before anything is changed.
    """
    if state == "absent":
        return _plan_absent(client, path, recursive)
    found = client.inspect(path)
    require_btrfs(path, found)
    if found.kind == "missing":
        plan = Plan(_absent_view(path))
        _plan_creation(client, plan, path, found.mount, snapshot_source, read_only, compression, recursive)
        is_top_level = False
    elif found.kind == "subvolume":
        current = describe_subvolume(client, path)
        if snapshot_source is not None:
            source_path, source = _snapshot_source(client, snapshot_source, found.mount)
            if current["parent_uuid"] != source["uuid"]:
                raise BtrfsError(
                    f"{path} exists but is not a snapshot of {source_path} (its parent UUID is "
                    f"{current['parent_uuid'] or 'none'}, the source's UUID is {source['uuid']}); "
                    "delete it first (state=absent) to take a new snapshot")
        plan = Plan(_present_view(path, current), current)
        is_top_level = current["id"] == TOP_LEVEL_ID
    else:
        raise _collision(path, found)
    _plan_properties(client, plan, path, read_only, compression, default, is_top_level)
    return plan


def _absent_view(path):
    return {"path": path, "state": "absent"}


def _present_view(path, subvolume):
    return {"path": path, "state": "present", "read_only": subvolume["read_only"],
            "compression": subvolume["compression"], "default": subvolume["default"]}


def _collision(path, found):
    what = "a plain directory" if found.kind == "directory" else "not a directory"
    return BtrfsError(f"{path} exists and is {what}, not a BTRFS subvolume; move it away or choose another path")


def _snapshot_source(client, source_path, mount):
    """The source path and its subvolume, which must be on the same filesystem as MOUNT."""
    found = client.inspect(source_path)
    if found.kind != "subvolume":
        detail = "does not exist" if found.kind == "missing" else "is not a BTRFS subvolume"
        raise BtrfsError(f"snapshot_source {source_path} {detail}; snapshots can only be taken of subvolumes")
    if found.mount.device != mount.device:
        raise BtrfsError(f"snapshot_source {source_path} is on another filesystem ({found.mount.source}) than the "
                         f"snapshot ({mount.source}); a BTRFS snapshot stays within its filesystem")
    return source_path, client.subvolume(source_path)


def _plan_creation(client, plan, path, mount, snapshot_source, read_only, compression, recursive):
    missing = []
    parent = os.path.dirname(path)
    parent_found = client.inspect(parent)
    while parent_found.kind == "missing":
        missing.insert(0, parent)
        parent = os.path.dirname(parent)
        parent_found = client.inspect(parent)
    if parent_found.kind not in ("directory", "subvolume"):
        raise BtrfsError(f"cannot create {path}: {parent} is not a directory")
    if missing and not recursive:
        raise BtrfsError(f"cannot create {path}: its parent directory {missing[-1]} does not exist; create it "
                         "first, or set recursive=true to create the missing parents as subvolumes")
    # The kernel answers EROFS for a read-only subvolume or mount, also to root: refuse before anything runs.
    if not os.access(parent, os.W_OK):
        raise BtrfsError(f"cannot create {path}: {parent} is read-only (a read-only subvolume, or a read-only "
                         "mount); set read_only=false on it, or remount it read-write, first")
    for parent_path in missing:
        plan.add(lambda parent_path=parent_path: client.create(parent_path), action="create", path=parent_path)
    if snapshot_source is None:
        plan.add(lambda: client.create(path), action="create", path=path)
        new = {"read_only": False, "compression": None, "default": False}
    else:
        source_path, source = _snapshot_source(client, snapshot_source, mount)
        # A snapshot copies the source's root directory, compression property included. Take it
        # read-only at once (atomic: what send/receive and backups expect) unless its compression
        # must change first, because BTRFS refuses property changes on a read-only subvolume.
        at_once = bool(read_only) and compression in (None, source["compression"])
        plan.add(lambda: client.snapshot(source_path, path, at_once),
                 action="snapshot", path=path, source=source_path, read_only=at_once)
        new = {"read_only": at_once, "compression": source["compression"], "default": False}
    plan.after = _present_view(path, new)


def _plan_properties(client, plan, path, read_only, compression, default, is_top_level):
    state = plan.after
    steps_before = len(plan.steps)
    # Order: writable first, compression, read-only last (a read-only subvolume's properties are frozen).
    if read_only is False and state["read_only"]:
        plan.add(lambda: client.set_read_only(path, False), action="set_read_only", path=path, read_only=False)
        state["read_only"] = False
    if compression is not None and compression != state["compression"]:
        if state["read_only"]:
            raise BtrfsError(f"{path} is read-only, and BTRFS refuses to change the compression of a read-only "
                             "subvolume; set read_only=false in this task (and make it read-only again later if needed)")
        plan.add(lambda: client.set_compression(path, compression), action="set_compression", path=path,
                 compression=compression)
        state["compression"] = compression
    if read_only and not state["read_only"]:
        plan.add(lambda: client.set_read_only(path, True), action="set_read_only", path=path, read_only=True)
        state["read_only"] = True
    if default and not state["default"]:
        plan.add(lambda: client.set_default(path), action="set_default", path=path)
        state["default"] = True
    elif default is False and state["default"]:
        if is_top_level:
            raise BtrfsError(f"{path} is the top-level subvolume; there is no other subvolume to fall back to, so set "
                             "default=true on the subvolume that should become the default instead")
        plan.add(lambda: client.reset_default(path), action="reset_default", path=path)
        state["default"] = False
    # On a read-only mount every property change fails with EROFS: refuse it before anything runs.
    if len(plan.steps) > steps_before and plan.subvolume is not None and _read_only_mount(path):
        raise BtrfsError(f"cannot change the properties of {path}: it is on a read-only mount; remount it "
                         "read-write first")


def _read_only_mount(path):
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _plan_absent(client, path, recursive):
    found = client.inspect(path)
    require_btrfs(path, found)
    if found.kind == "missing":
        return Plan(_absent_view(path))
    if found.kind != "subvolume":
        raise _collision(path, found)
    default_id = client.default_id(path)
    current = describe_subvolume(client, path, default_id)
    if current["id"] == TOP_LEVEL_ID:
        raise BtrfsError(f"{path} is the top-level subvolume of its filesystem, which cannot be deleted")
    plan = Plan(_present_view(path, current))
    plan.after = _absent_view(path)

    tree = {entry["id"]: entry for entry in client.subvolume_tree(path)}
    fs_path = client.resolve(current["id"], path)
    nested = {sub_id: path + client.resolve(sub_id, path)[len(fs_path):] for sub_id in _descendants(tree, current["id"])}
    if nested and not recursive:
        raise BtrfsError(f"{path} contains nested subvolumes ({', '.join(sorted(nested.values()))}); "
                         "set recursive=true to delete them too")
    doomed = dict(nested)
    doomed[current["id"]] = path
    if default_id in doomed:
        raise BtrfsError(f"{doomed[default_id]} is the default subvolume of its filesystem; make another subvolume "
                         "the default first (default=true on it, or default=false on this one for the top level)")
    # Deleting a subvolume removes an entry from the directory it is in: impossible in a read-only one.
    frozen = {tree[sub_id]["parent_id"] for sub_id in doomed} & {sub_id for sub_id, entry in tree.items() if entry["read_only"]}
    if frozen:
        raise BtrfsError(f"cannot delete {path}: it or a subvolume in it sits in a read-only subvolume "
                         f"({', '.join(sorted(client.resolve(sub_id, path) for sub_id in frozen))}, inside the "
                         "filesystem); set read_only=false on that one first")
    # The directory entry goes from the parent: the checks above name a read-only
    # subvolume; this one catches a read-only top level or mount.
    if not os.access(os.path.dirname(path), os.W_OK):
        raise BtrfsError(f"cannot delete {path}: {os.path.dirname(path)} is read-only (a read-only subvolume, or a "
                         "read-only mount); set read_only=false on it, or remount it read-write, first")
    # The kernel deletes a subvolume even while it is mounted elsewhere, so this is checked here.
    busy = sorted(mount.mount_point for mount in client.mounts() if mount.device == found.mount.device
                  and (mount.root == fs_path or mount.root.startswith(fs_path + "/")))
    if busy:
        raise BtrfsError(f"{path} (or something in it) is mounted at {', '.join(busy)}; unmount it first")

    # Deepest first: a subvolume can be deleted only once nothing is nested in it.
    for sub_id, nested_path in sorted(nested.items(), key=lambda item: item[1].count("/"), reverse=True):
        plan.add(lambda nested_path=nested_path: client.delete(nested_path), _identity(nested_path, tree[sub_id]),
                 action="delete", path=nested_path)
    plan.add(lambda: client.delete(path), _identity(path, current), action="delete", path=path)
    return plan


def _identity(path, subvolume):
    """What the ledger keeps of a subvolume: enough to tell it from any other, also once deleted."""
    return {"path": path, "id": subvolume["id"], "uuid": subvolume["uuid"], "parent_uuid": subvolume["parent_uuid"]}


def _descendants(tree, parent_id):
    """IDs of the subvolumes nested in PARENT_ID, at any depth (TREE maps ID → entry with parent_id)."""
    found = []
    pending = [parent_id]
    while pending:
        current = pending.pop()
        children = [sub_id for sub_id, entry in tree.items() if entry["parent_id"] == current]
        found.extend(children)
        pending.extend(children)
    return found


SUBVOLUME_ACTION = "btrfs_subvolume"  # the ledger action of a btrfs_subvolume run


def predicted_subvolume(plan):
    """What check mode returns: the subvolume as it is now (if it exists), with the planned properties."""
    if plan.subvolume is not None:
        subvolume = dict(plan.subvolume)
    else:
        subvolume = dict.fromkeys(("id", "uuid", "parent_uuid", "received_uuid", "generation", "parent_id"))
        subvolume["path"] = plan.after["path"]
    subvolume.update((key, plan.after[key]) for key in ("read_only", "compression", "default"))
    subvolume["flags"] = [flag for flag in subvolume.get("flags", []) if flag != "readonly"]
    if subvolume["read_only"]:
        subvolume["flags"].append("readonly")
    return subvolume


def manage_subvolume(client, ledger, params, check_mode, warn):
    """Run a btrfs_subvolume task with PARAMS (the module's options) against CLIENT (a BtrfsClient).

    Planned under LEDGER's run lock; a run that changes something records an intent with the planned
    actions before the first command and one ``btrfs_subvolume`` outcome after the last (the actions
    done, the path, the resulting subvolume or the deleted ones), also when a command fails. Returns
    the task result; raises OpdbusError, whose ``details`` hold the actions done and the entry.
    WARN receives the warnings of the run (an interrupted earlier run, a wait for the lock).
    """
    run = RecordedRun(ledger, SUBVOLUME_ACTION, check_mode=check_mode, lock_timeout=params["lock_timeout"])
    run.progress["actions"] = []
    try:
        request = subvolume_request(**{option: params[option] for option in REQUEST_OPTIONS})
        present = request["state"] == "present"
        run.progress.update(path=request["path"], state=request["state"], **({} if present else {"deleted": []}))
        with run:
            plan = plan_subvolume(client, **request)
            result = dict(changed=bool(plan.steps), actions=plan.actions,
                          diff=dict(before=plan.before, after=plan.after))
            if check_mode:
                subvolume = predicted_subvolume(plan) if present else None
            elif plan.steps:
                run.intend(plan.actions)
                plan.apply(run.progress)
                subvolume = describe_subvolume(client, request["path"]) if present else None
                if present:
                    run.progress["subvolume"] = {key: subvolume[key] for key in (
                        "id", "uuid", "parent_uuid", "read_only", "compression", "default")}
                run.record(run.progress)
            else:
                subvolume = plan.subvolume
    except OpdbusError as error:
        done = run.progress["actions"]
        error.details.update(changed=bool(done), actions=done, entry=run.entry)
        raise
    finally:
        for warning in run.warnings:
            warn(warning)
    if present:
        result["subvolume"] = subvolume
    result["entry"] = run.entry
    return result


def subvolume_task(params, check_mode, context):
    """btrfs_subvolume: bring the subvolume at ``path`` to the state PARAMS declare, recorded in the ledger."""
    ledger = ledger_from_params(params)
    return manage_subvolume(BtrfsClient(context.run, context.find_program), ledger, params, check_mode, context.warn)
