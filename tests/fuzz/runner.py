# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The in-host half of the fuzz test: runs collection modules in-process on a real systemd host.

tests/fuzz/harness.py copies this file, the collection's plugins and ansible-core's module_utils
into a test host and starts one ``python3 runner.py`` there. It speaks JSON lines: one request on
stdin, one answer on stdout. A ``case`` request names a module, its parameters and the files the
case needs (a ledger, possibly mutated; a source document; a sysfs tree); the runner builds them
in a fresh case directory, fingerprints everything a module could change, runs the module's
``main()`` in this process (as Ansible's own unit-test helper does), fingerprints again, and
answers with the module's JSON result, or with the traceback of an exception that escaped it,
and the fingerprint difference.

Running in-process keeps a case at a few milliseconds. What a real module process would release
at exit is released here after each case: the D-Bus connections the module opened.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib
import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))

import dbus  # noqa: E402  (python3-dbus of the host; the collection uses the same)
from ansible.module_utils import basic  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

COLLECTION = "ansible_collections.opdbus.fleet"
CASES_DIR = "/tmp/opdbus-fuzz"
CASE_MARK = "@CASE@"
BTRFS_MOUNT = "/mnt/btrfs"
UNIT_DIR = "/usr/local/lib/systemd/system"
SNAPSHOT_DIR_NAME = "@snapshots"
# Files a run takes locks on: a refused run may create them, and their bytes say who holds the lock,
# so they are left out of fingerprints, as are directories where files hold the state (op-dbus data).
LOCK_FILES = ("lock", "run.lock")
# Everything outside the case directory that a module could change; all of it is fingerprinted.
WATCHED_TREES = ("/etc/systemd/system", "/etc/systemd/system.control", "/run/systemd/system",
                 "/run/systemd/system.control", "/etc/op-dbus", "/var/lib/op-dbus", "/root/.config/op-dbus",
                 "/root/.local/state/op-dbus")
CANARIES = ("/tmp/opdbus-fuzz-canary", "/tmp/opdbus-fuzz-canary.json.zst")
CASE_CANARIES = ("canary", "victim.json.zst", "ledger-victim")
# A plain file each case has, for path options that name a file where a directory belongs.
EXISTING_FILE = "existing-file"
SENTINEL_UNITS = ("ssh.service", "dbus.service", "systemd-journald.service", "systemd-logind.service")
# The slowest sound case reads every unit systemd knows: about 2 s; a module taking 5 times that hangs.
# (The harness asks for less once a module has hung twice: further hangs are counted, not waited out.)
CASE_TIMEOUT = 10.0
BTRFS_IOC_GET_SUBVOL_INFO = 0x81F8943C  # _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args), 504 bytes
BTRFS_ROOT_SUBVOL_RDONLY = 1 << 0  # the root item flag that get_subvol_info returns
BTRFS_IOC_TREE_SEARCH = 0xD0009411  # _IOWR(0x94, 17, struct btrfs_ioctl_search_args), 4096 bytes
BTRFS_ROOT_TREE, BTRFS_ROOT_TREE_DIR, BTRFS_DIR_ITEM_KEY = 1, 6, 84

# The test units: each exercises a rule of the apply engine (see harness.FUZZ_UNITS for their roles).
SLEEP = "[Unit]\nDescription=fuzz {name}\n{extra}\n[Service]\nExecStart=/bin/sleep infinity\n{service}{install}"
INSTALL = "[Install]\nWantedBy=multi-user.target\n"
UNIT_FILES = {
    "fuzz-a.service": SLEEP.format(name="a", extra="", service="", install=INSTALL),
    "fuzz-b.service": SLEEP.format(name="b", extra="", service="", install=INSTALL),
    "fuzz-c.service": SLEEP.format(name="c", extra="", service="", install=INSTALL),
    "fuzz-static.service": SLEEP.format(name="static", extra="", service="", install=""),
    "fuzz-cond.service": SLEEP.format(name="cond", extra="ConditionPathExists=/nonexistent-fuzz", service="",
                                      install=INSTALL),
    "fuzz-assert.service": SLEEP.format(name="assert", extra="AssertPathExists=/nonexistent-fuzz", service="",
                                        install=INSTALL),
    "fuzz-bad.service": "[Unit]\nDescription=fuzz bad setting\n[Service]\nType=oneshot\n" + INSTALL,
    "fuzz-fail.service": "[Unit]\nDescription=fuzz fail\n[Service]\nExecStart=/bin/false\n" + INSTALL,
    "fuzz-masked.service": SLEEP.format(name="masked", extra="", service="", install=INSTALL),
    "fuzz-rtmask.service": SLEEP.format(name="runtime-masked", extra="", service="", install=INSTALL),
    "fuzz-tmpl@.service": SLEEP.format(name="template %i", extra="", service="", install=INSTALL),
    "fuzz-sock.socket": "[Unit]\nDescription=fuzz socket\n[Socket]\nListenStream=/run/fuzz-sock.sock\n"
                        "[Install]\nWantedBy=sockets.target\n",
    "fuzz-sock.service": SLEEP.format(name="sock", extra="", service="", install=""),
    "fuzz-tick.timer": "[Unit]\nDescription=fuzz timer\n[Timer]\nOnCalendar=yearly\n"
                       "[Install]\nWantedBy=timers.target\n",
    "fuzz-tick.service": "[Unit]\nDescription=fuzz tick\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
}
# The administrator's own unit: its file is in /etc/systemd/system, where systemd cannot mask it.
OWN_UNIT = ("fuzz-own.service", SLEEP.format(name="own", extra="", service="", install=INSTALL))
# name: (running, enabled, masked) at baseline; units not listed are stopped and not enabled.
BASELINE = {
    "fuzz-a.service": (True, True, False),
    "fuzz-c.service": (True, False, False),
    "fuzz-own.service": (True, True, False),
    "fuzz-tmpl@one.service": (True, False, False),
    "fuzz-sock.socket": (True, True, False),
    "fuzz-tick.timer": (True, False, False),
    "fuzz-masked.service": (False, False, True),
    "fuzz-b.service": (False, False, False),
}
RUNTIME_MASKED = ("fuzz-rtmask.service",)
UNIT_NAMES = sorted(set(UNIT_FILES) - {"fuzz-tmpl@.service"} | {OWN_UNIT[0], "fuzz-tmpl@one.service"})
# Ordering after the test units keeps them loaded: systemd otherwise unloads an inactive unit nothing
# refers to, and reloads its file for every ListUnitsByNames (a millisecond per unit and fingerprint).
HOLD_UNIT = ("fuzz-hold.target", "[Unit]\nDescription=keeps the fuzz test units loaded\nAfter="
             + " ".join(UNIT_NAMES) + "\n")


class CaseTimeout(BaseException):
    """Raised into a module that ran longer than CASE_TIMEOUT (a hang is a failure like a traceback)."""


# ---------------------------------------------------------------------------------------- host access

class Host:
    """D-Bus reads and shell commands of the runner itself (not of the module under test)."""

    def __init__(self):
        self.events = []  # what went wrong in the runner's own access, for the harness to print
        self.connect()

    def connect(self):
        self.bus = dbus.SystemBus(private=True)
        self.manager = dbus.Interface(self.bus.get_object("org.freedesktop.systemd1", "/org/freedesktop/systemd1"),
                                      "org.freedesktop.systemd1.Manager")

    def call(self, method, *args):
        """A Manager call; a connection the bus dropped is made again once (and reported)."""
        try:
            return getattr(self.manager, method)(*args)
        except dbus.DBusException as error:
            if error.get_dbus_name() != "org.freedesktop.DBus.Error.Disconnected":
                raise
            self.events.append(f"the runner's D-Bus connection was dropped during {method}; reconnected")
            self.connect()
            return getattr(self.manager, method)(*args)

    def units(self, names):
        """``{name: "load/active/sub"}`` for NAMES, in one ListUnitsByNames call."""
        if not names:
            return {}
        try:
            rows = self.call("ListUnitsByNames", dbus.Array(sorted(names), signature="s"))
        except (dbus.DBusException, ValueError, TypeError):
            # One name systemd does not accept spoils the call; read the names it does accept.
            return {name: state for name in names for state in self._one_unit(name)}
        return {str(row[0]): f"{row[2]}/{row[3]}/{row[4]}" for row in rows}

    def _one_unit(self, name):
        try:
            rows = self.call("ListUnitsByNames", dbus.Array([name], signature="s"))
        except (dbus.DBusException, ValueError, TypeError):
            return []
        return [f"{row[2]}/{row[3]}/{row[4]}" for row in rows]

    def wait_idle(self, names=None, timeout=3.0):
        """Wait until systemd has no job queued for NAMES (default: any unit), so that a fingerprint sees
        settled units. Jobs of other units (user@0.service stopping after the fleet's SSH check) do not count."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = [job for job in self.call("ListJobs") if names is None or str(job[1]) in names]
            if not jobs:
                return
            if time.monotonic() > deadline:
                self.events.append("systemd jobs still queued after %g s: %s" % (
                    timeout, ", ".join(f"{job[2]} {job[1]} ({job[3]})" for job in jobs)))
                return
            time.sleep(0.01)

    @staticmethod
    def sh(script):
        result = subprocess.run(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"setup command failed ({result.returncode}): {script}\n{result.stdout}{result.stderr}")
        return result.stdout


# ---------------------------------------------------------------------------------------- fingerprints

_DIGESTS = {}


def _file_digest(path, info):
    """The file's SHA-256, hashed again only when its inode, size, mtime or ctime changed."""
    identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    digest = _DIGESTS.get(identity)
    if digest is None:
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()[:16]
        if len(_DIGESTS) > 100_000:
            _DIGESTS.clear()
        _DIGESTS[identity] = digest
    return digest


def tree_fingerprint(root, with_dirs=True, skip=()):
    """``{relative path: description}`` of every entry under ROOT (bytes, mode, link target), except
    the top-level entries named in SKIP."""
    found = {}
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        return found
    if with_dirs or not stat.S_ISDIR(info.st_mode):
        found["."] = _describe(root, info)
    if not stat.S_ISDIR(info.st_mode):
        return found
    for directory, dirnames, filenames in os.walk(root):
        if directory == root and skip:
            dirnames[:] = [name for name in dirnames if name not in skip]
            filenames = [name for name in filenames if name not in skip]
        for name in sorted(dirnames + filenames):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if name in LOCK_FILES:
                continue
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode) and not with_dirs:
                continue
            found[relative] = _describe(path, info)
    return found


def _describe(path, info):
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return f"link->{os.readlink(path)}"
    if stat.S_ISDIR(info.st_mode):
        return f"dir {mode:o}" + _subvolume(path, info)
    if stat.S_ISREG(info.st_mode):
        try:
            return f"file {mode:o} {info.st_size} {_file_digest(path, info)}"
        except OSError as error:
            return f"file {mode:o} unreadable {error.errno}"
    return f"special {stat.S_IFMT(info.st_mode):o}"


def _subvolume(path, info):
    """For the root of a BTRFS subvolume: its id, UUID, read-only flag and compression property."""
    if info.st_ino != 256 or not path.startswith(BTRFS_MOUNT):
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return " subvolume ?"
    try:
        buffer = bytearray(504)
        fcntl.ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, buffer)
        treeid, = struct.unpack_from("=Q", buffer, 0)
        flags, = struct.unpack_from("=Q", buffer, 288)
        uuid = bytes(buffer[296:312]).hex()
        try:
            compression = os.getxattr(fd, "btrfs.compression").decode()
        except OSError:
            compression = ""
        read_only = "ro" if flags & BTRFS_ROOT_SUBVOL_RDONLY else "rw"
        return f" subvolume {treeid} {uuid[:12]} {read_only} compression={compression}"
    except OSError as error:
        return f" subvolume ? {error.errno}"
    finally:
        os.close(fd)


def default_subvolume():
    """The id of the default subvolume: the location of the "default" entry of the root tree's
    directory, found with BTRFS_IOC_TREE_SEARCH as btrfs-progs does (a subprocess costs 8 ms)."""
    fd = os.open(BTRFS_MOUNT, os.O_RDONLY | os.O_DIRECTORY)
    try:
        key = struct.pack("=7Q4I4Q", BTRFS_ROOT_TREE, BTRFS_ROOT_TREE_DIR, BTRFS_ROOT_TREE_DIR, 0, 2 ** 64 - 1, 0,
                          2 ** 64 - 1, BTRFS_DIR_ITEM_KEY, BTRFS_DIR_ITEM_KEY, 64, 0, 0, 0, 0, 0)
        buffer = bytearray(key + bytes(4096 - len(key)))
        fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH, buffer)
    finally:
        os.close(fd)
    items, = struct.unpack_from("=I", buffer, 64)
    offset = len(key)
    for _index in range(items):
        _transid, _objectid, _offset, _type, length = struct.unpack_from("=3Q2I", buffer, offset)
        item = bytes(buffer[offset + 32:offset + 32 + length])
        offset += 32 + length
        # struct btrfs_dir_item: location (u64 objectid, u8 type, u64 offset), u64 transid, u16 data_len,
        # u16 name_len, u8 type; then the name.
        location, = struct.unpack_from("=Q", item, 0)
        name_length, = struct.unpack_from("=H", item, 27)
        if item[30:30 + name_length] == b"default":
            return str(location)
    return "none"


def host_fingerprint(with_btrfs_default):
    """The part of a fingerprint outside the case directory and the units: watched trees, BTRFS, canaries."""
    print_ = {root: tree_fingerprint(root, with_dirs=root.startswith(("/etc/systemd", "/run/systemd")))
              for root in WATCHED_TREES}
    print_[BTRFS_MOUNT] = tree_fingerprint(BTRFS_MOUNT)
    if with_btrfs_default:
        print_["btrfs default subvolume"] = {"": default_subvolume()}
    print_["canaries"] = {path: tree_fingerprint(path).get(".", "missing") for path in CANARIES}
    return print_


def fingerprint(host, case_dir, unit_names, with_btrfs_default, host_part=None):
    """Everything the case could change: its units, the watched trees, the BTRFS mount, its directory.

    HOST_PART, when given, is the host part of the previous case's final fingerprint, which still
    holds when that case changed nothing (nothing else runs on the host between two cases).
    """
    print_ = {"units": host.units(unit_names)}
    print_.update(host_part if host_part is not None else host_fingerprint(with_btrfs_default))
    # The case's sysfs fixture is input, as /sys is; hashing its hundreds of files would double the cost.
    print_["case"] = tree_fingerprint(case_dir, with_dirs=False, skip=("sysfs",)) if case_dir else {}
    return print_


HOST_SECTIONS = WATCHED_TREES + (BTRFS_MOUNT, "btrfs default subvolume", "canaries")


def fingerprint_diff(before, after, case_dir):
    """Readable differences between two fingerprints, one line each."""
    lines = []
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section, {}), after.get(section, {})
        where = "case dir" if section == "case" else section
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                lines.append(f"{where}: {key}: {old.get(key, 'absent')} -> {new.get(key, 'absent')}"
                             + _ledger_growth(section, key, case_dir))
    return lines


def _ledger_growth(section, key, case_dir):
    """For a ledger file that grew, which entries were appended (so a report says what was recorded)."""
    if section != "case" or not key.endswith("ledger.jsonl") or not case_dir:
        return ""
    before = PREVIOUS_LEDGERS.get(key)
    try:
        with open(os.path.join(case_dir, key), "rb") as handle:
            now = handle.read()
    except OSError:
        return ""
    if before is None or not now.startswith(before):
        return ""
    actions = []
    for line in now[len(before):].splitlines():
        with contextlib.suppress(ValueError):
            actions.append(json.loads(line).get("action"))
    return f" (appended: {', '.join(map(str, actions))})" if actions else ""


PREVIOUS_LEDGERS = {}


def remember_ledgers(case_dir, ledgers):
    """The bytes of the case's ledgers before the module runs (to say afterwards what it appended)."""
    PREVIOUS_LEDGERS.clear()
    for relative in ledgers:
        key = os.path.join(relative, "ledger.jsonl")
        with contextlib.suppress(OSError), open(os.path.join(case_dir, key), "rb") as handle:
            PREVIOUS_LEDGERS[key] = handle.read()


# ---------------------------------------------------------------------------------------- running a module

class ModuleRun:
    """Runs one module's main() in this process and says how it ended."""

    ready = False
    buses = []

    @classmethod
    def install_hooks(cls):
        # Whether AnsibleModule finished validating the arguments: a failure after that came from the
        # module's own (domain) code, not from argument-spec validation.
        original_init = basic.AnsibleModule.__init__

        def init(module, *args, **kwargs):
            original_init(module, *args, **kwargs)
            cls.ready = True

        basic.AnsibleModule.__init__ = init
        # A module process closes its bus connections when it exits; in-process, the runner does.
        # Every connection (SystemBus(private=True), BusConnection(address)) is made by this __new__.
        original_new = dbus.bus.BusConnection.__new__

        def new_connection(klass, *args, **kwargs):
            connection = original_new(klass, *args, **kwargs)
            cls.buses.append(connection)
            return connection

        dbus.bus.BusConnection.__new__ = staticmethod(new_connection)

    @classmethod
    def run(cls, name, params, check_mode, diff, timeout=CASE_TIMEOUT, known_hangs=()):
        arguments = dict(params, _ansible_check_mode=check_mode, _ansible_diff=diff)
        stdout, stderr = io.StringIO(), io.StringIO()
        cls.ready = False
        cls.buses = []
        outcome = {}
        started = time.monotonic()

        def expire(_signum, frame):
            # A module still running after a second, where earlier cases hung, hangs again: stop it now.
            if known_hangs and time.monotonic() - started < timeout and collection_frame(frame) not in known_hangs:
                signal.setitimer(signal.ITIMER_REAL, timeout - (time.monotonic() - started))
                return
            raise CaseTimeout(f"the module ran longer than {timeout:g} s" if time.monotonic() - started >= timeout
                              else "the module was still running after 1 s where earlier cases hung")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, min(1.0, timeout) if known_hangs else timeout)
        try:
            with patch_module_args(arguments), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                importlib.import_module(f"{COLLECTION}.plugins.modules.{name}").main()
            outcome["end"] = "returned"  # main() must end with exit_json or fail_json
        except SystemExit as stop:
            outcome["end"] = "exit"
            outcome["exit_code"] = stop.code
        except CaseTimeout as error:
            outcome["end"] = "timeout"
            last = error.__traceback__
            while last.tb_next is not None:
                last = last.tb_next
            outcome["hung_at"] = collection_frame(last.tb_frame)
            outcome["traceback"] = f"{error}\n" + "".join(traceback.format_tb(error.__traceback__))
        except BaseException:  # noqa: B036 -- anything escaping main() is what the fuzz test looks for
            outcome["end"] = "exception"
            outcome["traceback"] = traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            for connection in cls.buses:
                with contextlib.suppress(Exception):
                    connection.close()
        outcome["seconds"] = round(time.monotonic() - started, 4)
        outcome["argspec_passed"] = cls.ready
        outcome["stderr"] = stderr.getvalue()[-4000:]
        text = stdout.getvalue()
        try:
            result = json.loads(text)
        except ValueError:
            outcome["result"] = None
            outcome["stdout"] = text[-4000:]
        else:
            # What the verdict needs, not the whole result (which can list hundreds of units).
            outcome["result"] = {key: result[key] for key in ("failed", "changed", "msg", "exception")
                                 if key in result} if isinstance(result, dict) else result
            if isinstance(result, dict):
                outcome["result"]["keys"] = sorted(result)
                # Whether the run recorded its outcome in the ledger (a failure after its intent).
                outcome["result"]["recorded"] = isinstance(result.get("entry"), dict)
                if isinstance(outcome["result"].get("msg"), str):
                    outcome["result"]["msg"] = outcome["result"]["msg"][:4000]
        return outcome


def collection_frame(frame):
    """``file:line in function`` of the innermost frame of the collection's code (where a hang is)."""
    while frame is not None:
        if "/ansible_collections/" in frame.f_code.co_filename:
            return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return None


# ---------------------------------------------------------------------------------------- case setup

def substitute(value, case_dir):
    if isinstance(value, str):
        return value.replace(CASE_MARK, case_dir).replace(TREES_MARK, TREES_DIR)
    if isinstance(value, list):
        return [substitute(item, case_dir) for item in value]
    if isinstance(value, dict):
        return {substitute(key, case_dir): substitute(item, case_dir) for key, item in value.items()}
    return value


def write_entry(path, spec, case_dir):
    """Create PATH as SPEC says: bytes (b64), text, JSON, a directory or a symlink."""
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if "dir" in spec:
        os.makedirs(path, exist_ok=True)
    elif "symlink" in spec:
        os.symlink(substitute(spec["symlink"], case_dir), path)
    else:
        if "b64" in spec:
            data = base64.b64decode(spec["b64"])
        elif "json" in spec:
            data = json.dumps(spec["json"]).encode()
        else:
            data = substitute(spec.get("text", ""), case_dir).encode("utf-8", "surrogateescape")
        with open(path, "wb") as handle:
            handle.write(data)
    if "mode" in spec and not os.path.islink(path):
        os.chmod(path, spec["mode"])


class Seeds:
    """Ledger directories made by real module runs during setup, copied into cases (and mutated there)."""

    def __init__(self):
        self.files = {}  # seed name: {relative path: bytes}

    def capture(self, name, directory):
        files = {}
        for root, _dirs, names in os.walk(directory):
            for file_name in names:
                if file_name in LOCK_FILES:
                    continue
                path = os.path.join(root, file_name)
                with open(path, "rb") as handle:
                    files[os.path.relpath(path, directory)] = handle.read()
        self.files[name] = files

    def describe(self):
        from ansible_collections.opdbus.fleet.plugins.module_utils._ledger import merkle

        described = {}
        for name, files in self.files.items():
            lines = files.get("ledger.jsonl", b"").splitlines()
            entries = []
            for line in lines:
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    entries.append({})
            head = {}
            with contextlib.suppress(ValueError, KeyError):
                head = json.loads(files["head.json"])
            leaves = [merkle.leaf_hash(line) for line in lines]
            anchors = [{"origin": head.get("origin"), "size": size,
                        "root": merkle.root_from_leaf_hashes(leaves[:size]).hex()} for size in range(len(lines) + 1)]
            described[name] = {
                "lines": len(lines),
                "actions": [entry.get("action") for entry in entries],
                "snapshot_ids": [entry.get("seq") for entry in entries if entry.get("action") == "snapshot"],
                "files": sorted(files),
                "blobs": sorted(path for path in files if path.startswith("snapshots/")),
                "anchors": anchors,
            }
        return described

    def materialise(self, name, directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for relative, data in self.files.get(name, {}).items():
            path = os.path.join(directory, relative)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
            os.chmod(path, 0o600)


def _target(directory, name, blobs):
    """The file a mutation names: ledger.jsonl, head.json, state/current.json or blob:N."""
    if name.startswith("blob:"):
        if not blobs:
            return None
        return os.path.join(directory, blobs[int(name[5:]) % len(blobs)])
    return os.path.join(directory, name)


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _write(path, data):
    if os.path.isdir(path) or os.path.islink(path):
        return  # an earlier mutation made it a directory or a link: leave that as it is
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _set_path(obj, path, value):
    """Set OBJ[path...] = value, creating mappings on the way (a list index counts modulo its length;
    in a mapping, an index is a key like any other: JSON keys are strings)."""
    path = list(path)
    for position, key in enumerate(path[:-1]):
        if isinstance(obj, list) and obj:
            obj = obj[int(key) % len(obj)] if isinstance(key, int) else obj[0]
        elif isinstance(obj, dict):
            key = path[position] = str(key)
            if not isinstance(obj.get(key), (dict, list)):
                obj[key] = {}
            obj = obj[key]
        else:
            return
    if isinstance(obj, dict):
        if value == {"$delete": True}:
            obj.pop(str(path[-1]), None)
        else:
            obj[str(path[-1])] = value
    elif isinstance(obj, list) and obj and isinstance(path[-1], int):
        obj[path[-1] % len(obj)] = value


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mutate(directory, mutations, case_dir):
    """Apply the harness's ledger mutations to the ledger in DIRECTORY, in order.

    Positions and indexes count modulo the size of what they address, so any generated number
    names something that exists (and shrinks to the first of it).
    """
    blobs = sorted(os.path.relpath(os.path.join(root, name), directory)
                   for root, _dirs, names in os.walk(os.path.join(directory, "snapshots")) for name in names)
    ledger_path = os.path.join(directory, "ledger.jsonl")
    for op, *args in mutations:
        if op in ("delete_line", "dup_line", "swap_lines", "edit_entry", "add_entry", "rehash"):
            if os.path.lexists(ledger_path) and not os.path.isfile(ledger_path):
                continue  # an earlier mutation made it a directory or a link
            data = _read(ledger_path) or b""
            lines = data.split(b"\n")
            trailing = lines.pop() if lines else b""  # b"" after the final newline, or a torn tail
            if op == "add_entry":
                lines.append(canonical(args[0]))
            elif not lines:
                continue
            elif op == "delete_line":
                del lines[args[0] % len(lines)]
            elif op == "dup_line":
                index = args[0] % len(lines)
                lines.insert(args[1] % (len(lines) + 1), lines[index])
            elif op == "swap_lines":
                first, second = args[0] % len(lines), args[1] % len(lines)
                lines[first], lines[second] = lines[second], lines[first]
            elif op == "edit_entry":
                index = args[0] % len(lines)
                try:
                    entry = json.loads(lines[index])
                except ValueError:
                    continue
                _set_path(entry, args[1], args[2])
                lines[index] = canonical(entry)
            else:
                lines = rehash(directory, lines)
                trailing = b""
            _write(ledger_path, b"\n".join(lines) + b"\n" + trailing if lines else trailing)
            continue
        path = _target(directory, args[0], blobs)
        if path is None:
            continue
        data = _read(path)
        if op == "flip":
            if data:
                position = args[1] % len(data)
                _write(path, data[:position] + bytes([data[position] ^ (args[2] or 1)]) + data[position + 1:])
        elif op == "truncate":
            if data:
                _write(path, data[:args[1] % len(data)])
        elif op == "append":
            _write(path, (data or b"") + base64.b64decode(args[1]))
        elif op == "replace":
            _write(path, base64.b64decode(args[1]))
        elif op == "head_set":
            try:
                head = json.loads(data or b"{}")
            except ValueError:
                head = {}
            if isinstance(head, dict):
                _set_path(head, [args[1]], args[2])
                _write(path, canonical(head) + b"\n")
        elif op == "remove":
            if os.path.lexists(path):
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        elif op == "make_dir":
            if os.path.lexists(path):
                os.unlink(path) if not os.path.isdir(path) else None
            os.makedirs(path, exist_ok=True)
        elif op == "symlink":
            if os.path.lexists(path):
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
            os.symlink(substitute(args[1], case_dir), path)
        elif op == "chmod":
            if os.path.lexists(path):
                os.chmod(path, args[1])
        else:
            raise ValueError(f"unknown mutation {op!r}")


def rehash(directory, lines):
    """Re-link LINES into a ledger whose hashes all check out (a consistent rewrite), with its head."""
    from ansible_collections.opdbus.fleet.plugins.module_utils._ledger import merkle

    frontier = merkle.Frontier()
    out = []
    for index, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"action": "garbage", "changes": {}, "host": "node1", "actor": "root",
                     "time": "2020-01-01T00:00:00.000000Z", "state_sha256": None}
        if not isinstance(entry, dict):
            entry = {"action": "garbage", "changes": entry}
        entry["seq"] = index
        entry["prev_root"] = frontier.root().hex()
        raw = canonical(entry)
        out.append(raw)
        frontier.append(merkle.leaf_hash(raw))
    try:
        origin = json.loads(_read(os.path.join(directory, "head.json")) or b"{}").get("origin")
    except (ValueError, AttributeError):
        origin = None
    length = sum(len(raw) + 1 for raw in out)
    head = {"version": 1, "origin": origin or "opdbus:node1:fuzz", "size": frontier.size, "length": length,
            "root": frontier.root().hex(), "frontier": frontier.to_hex()}
    _write(os.path.join(directory, "head.json"), canonical(head) + b"\n")
    return out


TREES_DIR = os.path.join(CASES_DIR, "trees")
TREES_MARK = "@TREES@"


def write_trees(trees):
    """The sysfs fixture trees (tests/unit/fixtures/numa/sysfs.py), once; cases read them in place."""
    shutil.rmtree(TREES_DIR, ignore_errors=True)
    for name, tree in trees.items():
        root = os.path.join(TREES_DIR, name)
        for relative in sorted(tree["dirs"]):
            os.makedirs(os.path.join(root, relative), exist_ok=True)
        for relative, content in tree["files"].items():
            _write(os.path.join(root, relative), content.encode())
        for relative, target in tree["links"].items():
            path = os.path.join(root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(target, path)


def materialise_sysfs(spec, directory):
    """A fixture tree with the case's edits: hard links to the shared tree, edited files replaced."""
    shutil.copytree(os.path.join(TREES_DIR, spec["base"]), directory, symlinks=True, copy_function=os.link)
    for relative, content in spec.get("edits", {}).items():
        path = os.path.join(directory, relative)
        if content is None:
            if os.path.lexists(path):
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        else:
            write_entry(path, {"text": content}, directory)


# ---------------------------------------------------------------------------------------- the runner

class Runner:
    def __init__(self):
        self.host = Host()
        self.seeds = Seeds()
        self.btrfs_layout = []
        self.quiet = None  # (with btrfs default, host part of the last fingerprint) after a case that changed nothing
        self.count = 0
        self.baseline = None
        self.warnings = []
        ModuleRun.install_hooks()

    # ---- setup
    def setup(self, request):
        """Install the test units, canaries, sysfs trees and the BTRFS layout, and make the seed ledgers.

        With ``adopt`` (the ``export`` of another host's setup), take that host's seed ledgers and BTRFS
        layout instead of making new ones, so that every host runs the same cases against the same files.
        """
        with open(os.path.join(HERE, "sysfs.json"), encoding="utf-8") as handle:
            write_trees(json.load(handle))
        os.makedirs(UNIT_DIR, exist_ok=True)
        for name, text in list(UNIT_FILES.items()) + [HOLD_UNIT]:
            with open(os.path.join(UNIT_DIR, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        with open(os.path.join("/etc/systemd/system", OWN_UNIT[0]), "w", encoding="utf-8") as handle:
            handle.write(OWN_UNIT[1])
        for path in CANARIES:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("must survive every case\n")
        self.reset_units()
        options = self.probe_options(request.get("modules", []))
        adopt = request.get("adopt")
        seed_log = []
        if adopt:
            self.seeds.files = {name: {path: base64.b64decode(data) for path, data in files.items()}
                                for name, files in adopt["seeds"].items()}
            self.btrfs_layout = [(path, kind, base64.b64decode(data) if kind == "file" else data)
                                 for path, kind, data in adopt["btrfs"]]
        else:
            self.make_btrfs_fixture()
            seed_log = self.make_seeds(options)
            self.capture_btrfs()
        self.reset_units()
        self.reset_btrfs()
        self.host.wait_idle()
        self.baseline = fingerprint(self.host, None, UNIT_NAMES, True)
        export = {"seeds": {name: {path: base64.b64encode(data).decode() for path, data in files.items()}
                            for name, files in self.seeds.files.items()},
                  "btrfs": [(path, kind, base64.b64encode(data).decode() if kind == "file" else data)
                            for path, kind, data in self.btrfs_layout]}
        return {"seeds": self.seeds.describe(), "seed_log": seed_log, "units": UNIT_NAMES, "options": options,
                "warnings": self.warnings, "export": export}

    def make_btrfs_fixture(self):
        self.host.sh(f"""set -e
            cd {BTRFS_MOUNT}
            btrfs -q subvolume create @data
            echo data > @data/file
            btrfs -q subvolume create @data/inner
            btrfs -q subvolume snapshot -r @data @ro >/dev/null
            btrfs -q subvolume create @comp
            btrfs property set @comp compression zstd
            mkdir -p {SNAPSHOT_DIR_NAME} plain
            echo file > file
            ln -s /etc link
        """)

    def capture_btrfs(self):
        """What reset_btrfs recreates: every entry of the mount, with file contents and subvolume flags."""
        layout = []
        for relative, info in sorted(tree_fingerprint(BTRFS_MOUNT).items()):
            path = os.path.join(BTRFS_MOUNT, relative)
            if relative == ".":
                continue
            if info.startswith("file"):
                layout.append((relative, "file", _read(path)))
            elif info.startswith("link->"):
                layout.append((relative, "link", info[len("link->"):]))
            elif " subvolume " in info:
                layout.append((relative, "subvolume", (" ro " in info, info.split("compression=")[1])))
            else:
                layout.append((relative, "dir", None))
        self.btrfs_layout = layout

    def reset_btrfs(self):
        """Wipe the BTRFS mount and recreate its baseline layout (successful cases create and delete
        subvolumes; recreated subvolumes get new ids and UUIDs, which no case relies on)."""
        subvolumes = sorted((relative for relative, info in tree_fingerprint(BTRFS_MOUNT).items()
                             if " subvolume " in info and relative != "."), key=lambda path: path.count("/"),
                            reverse=True)
        # A case may have made the top level itself read-only, which would keep anything in it.
        script = ["set -e", f"cd {BTRFS_MOUNT}", "btrfs property set -ts . ro false", "btrfs -q subvolume set-default 5 ."]
        script += [f"btrfs property set -ts {_relative(path)} ro false" for path in subvolumes]
        script += [f"btrfs -q subvolume delete {_relative(path)}" for path in subvolumes]
        script.append("rm -rf -- * .[!.]* 2>/dev/null || true")
        flags = []
        for relative, kind, data in self.btrfs_layout:
            if kind == "subvolume":
                script.append(f"btrfs -q subvolume create {_relative(relative)}")
                flags.append((relative, data))
            elif kind == "dir":
                script.append(f"mkdir -p {_relative(relative)}")
            elif kind == "link":
                script.append(f"ln -s {_quote(data)} {_relative(relative)}")
        self.host.sh("\n".join(script))
        for relative, kind, data in self.btrfs_layout:
            if kind == "file":
                _write(os.path.join(BTRFS_MOUNT, relative), data)
        script = [f"cd {BTRFS_MOUNT}"]
        script += [f"btrfs property set {_relative(path)} compression {_quote(compression)}"
                   for path, (_ro, compression) in flags if compression]
        script += [f"btrfs property set -ts {_relative(path)} ro true" for path, (ro, _c) in flags if ro]
        self.host.sh("\n".join(["set -e"] + script))

    def reset_units(self):
        """Bring the test units back to their baseline state (successful cases start, stop and mask them)."""
        enabled = [name for name, (_run, on, _mask) in BASELINE.items() if on]
        running = [name for name, (run, _on, _mask) in BASELINE.items() if run]
        masked = [name for name, (_run, _on, mask) in BASELINE.items() if mask]
        # One daemon-reload for all the unit file changes: each systemctl enable or mask would do its own.
        self.host.sh(f"""
            for dropin in /etc/systemd/system/fuzz-*.d /run/systemd/system/fuzz-*; do rm -rf "$dropin"; done
            for link in /etc/systemd/system/fuzz-*; do [ -L "$link" ] && rm -f "$link"; done
            find /etc/systemd/system -lname '*fuzz-*' -delete
            systemctl --no-reload enable {' '.join(enabled)} >/dev/null 2>&1
            systemctl --no-reload mask {' '.join(masked)} >/dev/null 2>&1
            systemctl --no-reload mask --runtime {' '.join(RUNTIME_MASKED)} >/dev/null 2>&1
            systemctl daemon-reload
            systemctl stop {' '.join(name for name in UNIT_NAMES if name not in running)} 2>/dev/null || true
            systemctl reset-failed 'fuzz-*' 2>/dev/null || true
            systemctl start {' '.join(running)} {HOLD_UNIT[0]}
        """)

    def make_seeds(self, supported):
        """Seed ledgers written by the modules themselves, so mutations start from the real format."""
        log = []
        work = os.path.join(CASES_DIR, "seed")
        shutil.rmtree(work, ignore_errors=True)
        ledger = os.path.join(work, "ledger")
        state_file = os.path.join(work, "state.json")
        os.makedirs(work)

        def run(module, params, check_mode=False):
            outcome = ModuleRun.run(module, params, check_mode, False)
            result = outcome.get("result") or {}
            ok = outcome["end"] == "exit" and not result.get("failed")
            log.append({"module": module, "params": params, "ok": ok,
                        "msg": result.get("msg") or outcome.get("traceback", "")[-600:]})
            return result

        def doc(**units):
            return {"version": 1, "plugins": {"systemd": {"units": units}}}

        fuzz_units = ["fuzz-a.service", "fuzz-b.service", "fuzz-c.service"]
        run("opdbus_state", {"state": doc(**{"fuzz-b.service": {"active_state": "active", "enabled": True}}),
                             "ledger_path": ledger, "state_file": state_file})
        run("opdbus_state", {"state": doc(**{"fuzz-b.service": {"active_state": "inactive", "enabled": False}}),
                             "ledger_path": ledger, "state_file": state_file})
        run("opdbus_snapshot", {"units": fuzz_units, "label": "first", "ledger_path": ledger, "state_file": state_file})
        run("opdbus_snapshot", {"units": fuzz_units + ["fuzz-static.service"], "ledger_path": ledger,
                                "state_file": state_file})
        run("opdbus_snapshot", {"units": fuzz_units, "ledger_path": ledger, "state_file": state_file,
                                "btrfs_subvolumes": [f"{BTRFS_MOUNT}/@data"],
                                "btrfs_snapshot_dir": f"{BTRFS_MOUNT}/{SNAPSHOT_DIR_NAME}"})
        run("opdbus_state", {"state": doc(**{"fuzz-c.service": {"active_state": "inactive"}}),
                             "ledger_path": ledger, "state_file": state_file})
        run("opdbus_snapshot", {"state": "restored", "id": "latest", "ledger_path": ledger, "state_file": state_file})
        if "ledger_path" in supported.get("opdbus_numa", ()):
            run("opdbus_numa", {"units": {"fuzz-c.service": {"strategy": "default"}}, "ledger_path": ledger})
            run("opdbus_numa", {"units": {"fuzz-c.service": None}, "state": "absent", "ledger_path": ledger})
        if "ledger_path" in supported.get("btrfs_subvolume", ()):
            run("btrfs_subvolume", {"path": f"{BTRFS_MOUNT}/@seed", "ledger_path": ledger})
            run("btrfs_subvolume", {"path": f"{BTRFS_MOUNT}/@seed", "state": "absent", "ledger_path": ledger})
        run("opdbus_snapshot", {"units": fuzz_units, "label": "last", "ledger_path": ledger, "state_file": state_file})
        self.seeds.capture("history", ledger)
        # A run killed between its intent and its outcome leaves an intent as the last entry.
        try:
            from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger

            Ledger(ledger).append("intent", {"for": "apply", "planned": [{"unit": "fuzz-b.service", "action": "start"}]})
            self.seeds.capture("interrupted", ledger)
            Ledger(ledger).append("intent", {"for": "apply", "planned": [{"unit": "fuzz-a.service", "action": "stop"}]},
                                  defer_head=True)
            self.seeds.capture("head_lag", ledger)
        except Exception as error:  # noqa: BLE001 -- the seed is best effort; the report says what failed
            self.warnings.append(f"could not append a synthetic intent to the seed ledger: {error!r}")
        self.seeds.files["empty"] = {}
        if len(self.seeds.files["history"].get("ledger.jsonl", b"").splitlines()) < 3:
            self.warnings.append("the seed ledger has fewer than 3 entries: the modules failed while seeding "
                                 "(see seed_log); ledger mutations test less than they should")
        shutil.rmtree(work, ignore_errors=True)
        return log

    @staticmethod
    def probe_options(modules):
        """The options each module accepts: its argument spec, caught as main() creates its AnsibleModule."""

        class Probed(BaseException):
            pass

        options = {}
        original_init = basic.AnsibleModule.__init__

        def probe(_module, argument_spec=None, *_args, **_kwargs):
            raise Probed(sorted(argument_spec or ()))

        basic.AnsibleModule.__init__ = probe
        try:
            for name in modules:
                try:
                    importlib.import_module(f"{COLLECTION}.plugins.modules.{name}").main()
                except Probed as found:
                    options[name] = found.args[0]
                except BaseException:  # noqa: B036 -- a module that does not even start is reported by its cases
                    options[name] = []
        finally:
            basic.AnsibleModule.__init__ = original_init
        return options

    # ---- cases
    def case(self, request):
        clock = [time.monotonic()]
        self.count += 1
        case_dir = os.path.join(CASES_DIR, f"case-{self.count}")
        shutil.rmtree(case_dir, ignore_errors=True)
        os.makedirs(case_dir, mode=0o700)
        for name in CASE_CANARIES + (EXISTING_FILE,):
            with open(os.path.join(case_dir, name), "w", encoding="utf-8") as handle:
                handle.write("must survive every case\n")
        setup = request.get("setup", {})
        for relative, spec in setup.get("ledgers", {}).items():
            directory = os.path.join(case_dir, relative)
            self.seeds.materialise(spec.get("seed", "empty"), directory)
            mutate(directory, spec.get("mutations", []), case_dir)
        for relative, spec in setup.get("sysfs", {}).items():
            materialise_sysfs(spec, os.path.join(case_dir, relative))
        for relative, spec in setup.get("files", {}).items():
            write_entry(os.path.join(case_dir, relative), spec, case_dir)
        params = substitute(request["params"], case_dir)
        units = set(UNIT_NAMES) | set(SENTINEL_UNITS) | {name for name in request.get("units", [])
                                                         if isinstance(name, str) and _plausible_unit(name)}
        clock.append(time.monotonic())
        self.host.wait_idle(units | {HOLD_UNIT[0]})
        remember_ledgers(case_dir, list(setup.get("ledgers", {})) + ["ledger"])
        with_default = request.get("btrfs_default", False)
        reuse = self.quiet[1] if self.quiet is not None and self.quiet[0] == with_default else None
        before = fingerprint(self.host, case_dir, units, with_default, reuse)
        clock.append(time.monotonic())
        held = []
        previous_cwd = os.getcwd()
        os.chdir(case_dir)  # a relative path in the parameters lands in the case directory
        try:
            for relative in setup.get("hold_run_lock", []):
                held.append(_hold_lock(os.path.join(case_dir, relative)))
            outcome = ModuleRun.run(request["module"], params, request.get("check_mode", False),
                                    request.get("diff", False), request.get("timeout", CASE_TIMEOUT),
                                    request.get("known_hangs", ()))
        finally:
            for fd in held:
                os.close(fd)
            os.chdir(previous_cwd)
        clock.append(time.monotonic())
        self.host.wait_idle(units | {HOLD_UNIT[0]})
        after = fingerprint(self.host, case_dir, units, with_default)
        outcome["changes"] = fingerprint_diff(before, after, case_dir)[:40]
        host_part = {key: after[key] for key in HOST_SECTIONS if key in after}
        self.quiet = None if outcome["changes"] else (with_default, host_part)
        if any(line.startswith(f"{BTRFS_MOUNT}: .: ") for line in outcome["changes"]):
            # The top level made read-only would turn every later BTRFS case into the same failure.
            self.reset_btrfs()
        shutil.rmtree(case_dir, ignore_errors=True)
        clock.append(time.monotonic())
        outcome["timing"] = [round(end - start, 4) for start, end in zip(clock, clock[1:])]
        if self.host.events:
            outcome["runner_events"], self.host.events = self.host.events, []
        return outcome

    def reset(self, _request):
        """Undo what accepted cases changed, where they changed anything (read-only modules change nothing)."""
        started = time.monotonic()
        self.quiet = None
        self.host.wait_idle(set(UNIT_NAMES))
        drift = fingerprint_diff(self.baseline, fingerprint(self.host, None, UNIT_NAMES, True), None)
        if any(line.startswith(("units:", "/etc/systemd", "/run/systemd")) for line in drift):
            self.reset_units()
        if any(line.startswith(BTRFS_MOUNT) or line.startswith("btrfs default") for line in drift):
            self.reset_btrfs()
        self.host.wait_idle(set(UNIT_NAMES))
        return {"drift": len(drift), "seconds": round(time.monotonic() - started, 2)}

    def serve(self):
        for line in sys.stdin:
            request = json.loads(line)
            try:
                answer = getattr(self, request["op"])(request)
            except Exception:  # noqa: BLE001 -- a runner failure is reported to the harness, which stops
                answer = {"runner_error": traceback.format_exc()}
            sys.__stdout__.write(json.dumps(answer, default=repr) + "\n")
            sys.__stdout__.flush()


def _quote(text):
    return "'" + str(text).replace("'", "'\\''") + "'"


def _relative(path):
    """PATH (relative to the BTRFS mount) for a command line: a case's path may start with a dash."""
    return _quote("./" + path)


def _plausible_unit(name):
    """Whether NAME could be a unit systemd knows (D-Bus strings carry no NUL, nor lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeError:
        return False
    return 0 < len(name) < 200 and not set(name) & {"/", "\x00", "\n"} and "@." not in name and "." in name


def _hold_lock(path):
    """Hold an exclusive flock on PATH, as another run would (creating the directory and file if needed)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, b"pid 1 (fuzz: another run) since 2020-01-01T00:00:00.000000Z")
    return fd


if __name__ == "__main__":
    os.makedirs(CASES_DIR, exist_ok=True)
    os.umask(0o022)
    Runner().serve()
