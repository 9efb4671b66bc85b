# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""BTRFS subvolumes through btrfs-progs, shared by the btrfs_* modules and the snapshot module.

btrfs-progs rather than libbtrfsutil's Python bindings: every host that has BTRFS has btrfs-progs,
while python3-btrfsutil is a separate package that is rarely installed (docs/btrfs.md has the
comparison). The price of the command line is parsing text, which is where community.general's
module went wrong, so this module reads only the forms that are stable and unambiguous:

- whether a path is a subvolume comes from the kernel, not from text: a subvolume's root directory
  is always inode 256 on a BTRFS mount (the test btrfs-progs itself uses);
- ``btrfs subvolume show``: tab-indented ``Key: value`` lines, stopping at the snapshot list
  (which holds names, not keys);
- ``btrfs subvolume list``: only the fixed leading fields (IDs, generations, UUIDs). Its path column
  is relative to the subvolume of the path it is given in some cases and to the top level in others,
  so paths come from ``btrfs inspect-internal subvolid-resolve``, which prints exactly one full path;
- ``btrfs property get``: ``name=value`` lines; ``btrfs subvolume get-default``: the leading ``ID n``;
- mounts from /proc/self/mountinfo (kernel ABI: octal escapes, the filesystem's device number).

Every command runs as an argument vector with ``LC_ALL=C``; a failing one raises :class:`BtrfsError`
carrying the command, its exit code and its output. The planner (:func:`plan_subvolume`) reads and
validates everything before it returns, so a plan that is returned can only fail on a command error.
:func:`manage_subvolume` runs a whole btrfs_subvolume task and records it in the ledger.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import stat
from ansible_collections.opdbus.fleet.plugins.module_utils.errors import OpdbusError, host_file_error
from ansible_collections.opdbus.fleet.plugins.module_utils.recorded_run import RecordedRun

TOP_LEVEL_ID = 5  # BTRFS_FS_TREE_OBJECTID: the top-level subvolume, "/" of the filesystem
SUBVOLUME_ROOT_INODE = 256  # BTRFS_FIRST_FREE_OBJECTID: the root directory of every subvolume
COMPRESSION_CHOICES = ("zstd", "lzo", "zlib", "none")
MOUNTINFO = "/proc/self/mountinfo"

_C_LOCALE = {"LC_ALL": "C", "LANG": "C"}
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_SHOW_FIELDS = {
    "UUID": "uuid",
    "Parent UUID": "parent_uuid",
    "Received UUID": "received_uuid",
    "Subvolume ID": "id",
    "Generation": "generation",
    "Parent ID": "parent_id",
    "Flags": "flags",
}
_LIST_ARGS = ("subvolume", "list", "-p", "-c", "-g", "-u", "-q", "-R")
_LIST_LINE = re.compile(
    r"ID (?P<id>\d+) gen (?P<generation>\d+) cgen \d+ parent (?P<parent_id>\d+) top level \d+"
    r" parent_uuid (?P<parent_uuid>\S+)\s+received_uuid (?P<received_uuid>\S+)\s+uuid (?P<uuid>\S+) path "
)
_DEFAULT_LINE = re.compile(r"ID (\d+)\b")
_FS_UUID = re.compile(r"uuid: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
# "MISSING" follows the path when the device node is not there (as in a container).
_FS_DEVICE = re.compile(r"\s+devid\s+\d+\s+size\s+\S+\s+used\s+\S+\s+path\s+(?P<path>.+?)(?: MISSING)?$")

Mount = collections.namedtuple("Mount", "device root mount_point fstype source")
Mount.__doc__ = """One line of mountinfo. ``device`` (major:minor) is shared by every mount of one filesystem;
``root`` is the directory of the filesystem that is mounted (for BTRFS, the subvolume path)."""

PathState = collections.namedtuple("PathState", "kind mount")
PathState.__doc__ = """What is at a path: ``kind`` is subvolume, directory, other or missing; ``mount`` holds it
(for a missing path, the mount of its nearest existing ancestor)."""


class BtrfsError(OpdbusError):
    """A failure reported to the user as is; ``details`` (cmd, rc, stdout, stderr) go into the result."""


# --------------------------------------------------------------------------- parsers (pure)

def _unescape(field):
    # mountinfo writes space, tab, newline and backslash in paths as \ooo.
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text):
    """/proc/PID/mountinfo → list of :data:`Mount`, in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        # Optional fields (shared:N, master:N …) end at a lone "-".
        separator = fields.index("-", 6)
        mounts.append(Mount(
            device=fields[2],
            root=_unescape(fields[3]),
            mount_point=_unescape(fields[4]),
            fstype=fields[separator + 1],
            source=_unescape(fields[separator + 2]),
        ))
    return mounts


def mount_containing(mounts, path):
    """The mount an absolute, symlink-free PATH is on: longest mount point, the last one if stacked."""
    found = None
    for mount in mounts:
        point = mount.mount_point
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if found is None or len(point) >= len(found.mount_point):
                found = mount
    return found


def parse_subvolume_show(text):
    """``btrfs subvolume show`` → dict of id, uuid, parent_uuid, received_uuid, generation, parent_id, flags, read_only."""
    raw = {}
    # Line 1 is the path. Keys are tab-indented; the lines after "Snapshot(s):" are names, not keys.
    for line in text.splitlines()[1:]:
        key, separator, value = line.strip().partition(":")
        if key == "Snapshot(s)":
            break
        if line.startswith("\t") and separator and key in _SHOW_FIELDS:
            raw.setdefault(_SHOW_FIELDS[key], value.strip())
    missing = sorted(set(_SHOW_FIELDS) - {key for key, name in _SHOW_FIELDS.items() if name in raw})
    if missing:
        raise BtrfsError(f"unexpected output of btrfs subvolume show (no {', '.join(missing)}): {text[:300]!r}")
    flags = [] if raw["flags"] == "-" else [flag for flag in re.split(r"[,\s]+", raw["flags"]) if flag]
    return {
        "id": int(raw["id"]),
        "uuid": _optional(raw["uuid"]),
        "parent_uuid": _optional(raw["parent_uuid"]),
        "received_uuid": _optional(raw["received_uuid"]),
        "generation": int(raw["generation"]),
        # The top level has no parent; btrfs-progs prints 0.
        "parent_id": int(raw["parent_id"]) or None,
        "flags": flags,
        "read_only": "readonly" in flags,
    }


def parse_subvolume_list(text):
    """``btrfs subvolume list -p -c -g -u -q -R`` → list of dicts (id, generation, parent_id, uuids), no paths."""
    entries = []
    for line in text.splitlines():
        match = _LIST_LINE.match(line)
        if match:
            entry = match.groupdict()
            entries.append({
                "id": int(entry["id"]),
                "generation": int(entry["generation"]),
                "parent_id": int(entry["parent_id"]),
                "uuid": _optional(entry["uuid"]),
                "parent_uuid": _optional(entry["parent_uuid"]),
                "received_uuid": _optional(entry["received_uuid"]),
            })
        elif line.startswith("ID "):
            raise BtrfsError(f"unexpected output of btrfs subvolume list: {line!r}")
        # Anything else continues the path of the line before (a name with a newline): ignored.
    return entries


def parse_property(text, name):
    """``btrfs property get`` → the value of NAME, None when it is not set."""
    prefix = name + "="
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):] or None
    return None


def parse_default_id(text):
    """``btrfs subvolume get-default`` ("ID 5 (FS_TREE)" or "ID 256 gen … path …") → the ID."""
    match = _DEFAULT_LINE.match(text)
    if not match:
        raise BtrfsError(f"unexpected output of btrfs subvolume get-default: {text[:300]!r}")
    return int(match.group(1))


def parse_filesystem_show(text):
    """``btrfs filesystem show MOUNT`` → uuid and device paths (the label comes from ``filesystem label``)."""
    lines = text.splitlines()
    match = _FS_UUID.search(lines[0]) if lines else None
    if not match:
        raise BtrfsError(f"unexpected output of btrfs filesystem show: {text[:300]!r}")
    devices = [device.group("path") for device in map(_FS_DEVICE.match, lines[1:]) if device]
    return {"uuid": match.group(1), "devices": devices}


def parse_compression(value):
    """The compression property as this collection reports it: the kernel also accepts "no" for "none"."""
    return "none" if value == "no" else value


def _optional(value):
    return None if value == "-" else value


def _chomp(output):
    """A command's output without its final newline (a label or path may end in spaces, so no strip)."""
    return output[:-1] if output.endswith("\n") else output


# --------------------------------------------------------------------------- the client

class BtrfsClient:
    """Reads and changes subvolumes of mounted BTRFS filesystems for one module run."""

    def __init__(self, module, mountinfo=MOUNTINFO):
        self._module = module
        self._mountinfo = mountinfo
        self._mounts = None
        self._btrfs = None

    def _run(self, *args):
        if self._btrfs is None:
            self._btrfs = self._module.get_bin_path("btrfs")
            if not self._btrfs:
                raise BtrfsError("the btrfs command was not found on the target; install btrfs-progs")
        argv = [self._btrfs] + [str(arg) for arg in args]
        rc, stdout, stderr = self._module.run_command(argv, environ_update=_C_LOCALE)
        if rc != 0:
            raise BtrfsError(
                f"{shlex.join(argv)} failed with exit code {rc}: {(stderr or stdout).strip()}",
                cmd=argv, rc=rc, stdout=stdout, stderr=stderr,
            )
        return stdout

    # ---- reading
    def mounts(self):
        """The mount table, read once per client: the modules mount and unmount nothing."""
        if self._mounts is None:
            try:
                with open(self._mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
                    self._mounts = parse_mountinfo(handle.read())
            except OSError as error:
                raise host_file_error("read", self._mountinfo, error) from None
        return self._mounts

    def inspect(self, path):
        """The :data:`PathState` of PATH, an absolute path without symlinks above its last component."""
        probe = path
        while True:
            try:
                info = os.lstat(probe)
                break
            except (FileNotFoundError, NotADirectoryError):
                # Not a directory: an ancestor is a file, which the caller reports as "not a directory".
                probe = os.path.dirname(probe)
            except OSError as error:
                raise host_file_error("look up", probe, error) from None
        mount = mount_containing(self.mounts(), probe)
        if probe != path:
            kind = "missing"
        elif stat.S_ISDIR(info.st_mode):
            on_btrfs = mount is not None and mount.fstype == "btrfs"
            kind = "subvolume" if on_btrfs and info.st_ino == SUBVOLUME_ROOT_INODE else "directory"
        else:
            kind = "other"
        return PathState(kind, mount)

    def subvolume(self, path):
        """The subvolume whose root is PATH: :func:`parse_subvolume_show` plus its compression."""
        info = parse_subvolume_show(self._run("subvolume", "show", path))
        info["compression"] = self.compression(path)
        return info

    def compression(self, path):
        return parse_compression(parse_property(self._run("property", "get", "-t", "inode", path, "compression"), "compression"))

    def default_id(self, path):
        """ID of the default subvolume of the filesystem PATH is on."""
        return parse_default_id(self._run("subvolume", "get-default", path))

    def subvolume_tree(self, path):
        """Every subvolume of the filesystem except the top level, with read_only, without paths."""
        entries = parse_subvolume_list(self._run(*_LIST_ARGS, path))
        read_only = {entry["id"] for entry in parse_subvolume_list(self._run(*(_LIST_ARGS + ("-r",)), path))}
        for entry in entries:
            entry["read_only"] = entry["id"] in read_only
        return entries

    def resolve(self, subvolume_id, path):
        """Path of a subvolume inside its filesystem ("/" is the top level), PATH being on that filesystem."""
        output = self._run("inspect-internal", "subvolid-resolve", subvolume_id, path)
        return "/" + _chomp(output)

    def subvolumes(self, path):
        """:meth:`subvolume_tree` with each subvolume's path inside the filesystem."""
        entries = self.subvolume_tree(path)
        for entry in entries:
            entry["path"] = self.resolve(entry["id"], path)
        return entries

    def filesystem(self, mount_point):
        """uuid, label and devices of the filesystem mounted at MOUNT_POINT.

        ``filesystem show`` and ``filesystem label`` accept a mount point, not any path in it.
        """
        info = parse_filesystem_show(self._run("filesystem", "show", mount_point))
        info["label"] = _chomp(self._run("filesystem", "label", mount_point)) or None
        return info

    # ---- changing
    def create(self, path):
        self._run("subvolume", "create", path)

    def snapshot(self, source, path, read_only=False):
        self._run("subvolume", "snapshot", *(["-r"] if read_only else []), source, path)

    def delete(self, path):
        self._run("subvolume", "delete", path)

    def set_read_only(self, path, read_only):
        self._run("property", "set", "-t", "subvol", path, "ro", "true" if read_only else "false")

    def set_compression(self, path, compression):
        self._run("property", "set", "-t", "inode", path, "compression", compression)

    def set_default(self, path):
        self._run("subvolume", "set-default", path)

    def reset_default(self, path):
        """Make the top level the default subvolume of the filesystem PATH is on."""
        self._run("subvolume", "set-default", TOP_LEVEL_ID, path)


# --------------------------------------------------------------------------- what the modules read and return

def normalise_path(path, option="path"):
    """The path given as OPTION, normalised; relative paths, newlines (line-based output) and NULs are refused."""
    if not os.path.isabs(path) or "\n" in path or "\0" in path:
        raise BtrfsError(f"{option} must be an absolute path without newlines, got {path!r}")
    path = os.path.normpath(path)
    # Symlinks above the last component are followed; the last component is what the task names,
    # so a symlink there is not a subvolume (and is never deleted through).
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def describe_subvolume(client, path, default_id=None):
    """The subvolume at PATH as the modules return it: :meth:`BtrfsClient.subvolume`, path and default.

    DEFAULT_ID is the filesystem's default subvolume id when the caller has already read it.
    """
    subvolume = client.subvolume(path)
    subvolume["path"] = path
    subvolume["default"] = (client.default_id(path) if default_id is None else default_id) == subvolume["id"]
    return subvolume


def describe_filesystem(client, path):
    """The filesystem PATH is on and its subvolumes (all but the top level), as btrfs_info returns them."""
    path = normalise_path(path)
    found = client.inspect(path)
    if found.kind == "missing":
        raise BtrfsError(f"{path} does not exist")
    _require_btrfs(path, found)
    filesystem = client.filesystem(found.mount.mount_point)
    default_id = client.default_id(path)
    filesystem["default_subvolume"] = {"id": default_id, "path": client.resolve(default_id, path)}
    mounts = [mount for mount in client.mounts() if mount.device == found.mount.device]
    subvolumes = client.subvolumes(path)
    for subvolume in subvolumes:
        subvolume["mountpoints"] = [mount.mount_point for mount in mounts if mount.root == subvolume["path"]]
    return {"filesystem": filesystem, "subvolumes": subvolumes}


# --------------------------------------------------------------------------- planning

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
    _require_btrfs(path, found)
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


def _require_btrfs(path, found):
    if found.mount is None or found.mount.fstype != "btrfs":
        fstype, where = (found.mount.fstype, found.mount.mount_point) if found.mount else ("unknown", "an unknown place")
        raise BtrfsError(f"{path} is not on BTRFS: it is on a {fstype} filesystem mounted at {where}")


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
    _require_btrfs(path, found)
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


# --------------------------------------------------------------------------- one task

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
