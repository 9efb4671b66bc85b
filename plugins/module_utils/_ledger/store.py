# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger on disk: one directory, its locks, reads of a consistent copy, and durable appends.

The file format, the crash semantics and the threat model are described in docs/ledger.md;
the comments here explain only why the code is shaped the way it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import socket
import stat
import time

from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import (
    flock_within,
    fsync_directory,
    make_directories,
    write_all,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._common.params import require_absolute, seconds
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import (
    DECODER,
    EMPTY_ROOT_HEX,
    HEX_DIGEST,
    Head,
    INVESTIGATE,
    LedgerError,
    canonical_json,
    check_line,
    is_int,
    ledger_os_error,
    select_entries,
    split_lines,
    utc_now,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import Frontier, consistency_proof, inclusion_proof, leaf_hash
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recovery import FileSnapshot, Layout, Residue
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.verify import root_hex, verify_snapshot


DEFAULT_LEDGER_DIR = "/var/lib/op-dbus/blockchain"
DEFAULT_LOCK_TIMEOUT = 30.0
LEDGER_FILE = "ledger.jsonl"
HEAD_FILE = "head.json"
LOCK_FILE = "lock"
RUN_LOCK_FILE = "run.lock"
DEFAULT_RUN_LOCK_TIMEOUT = 120.0


def _read_file(path):
    with open(path, "rb") as handle:
        return handle.read()


class Ledger:
    """The ledger in one directory. Cheap to construct: nothing is read or created until used.

    Writers (``append``) serialise on an exclusive flock of ``<directory>/lock``; readers take a
    shared lock only long enough to copy the files, so verification never blocks writers for
    longer than a read of the files.
    """

    def __init__(self, directory=DEFAULT_LEDGER_DIR, host=None, lock_timeout=DEFAULT_LOCK_TIMEOUT):
        self.directory = os.path.abspath(directory)
        self.host = host or socket.gethostname()
        self.lock_timeout = lock_timeout
        self.ledger_path = os.path.join(self.directory, LEDGER_FILE)
        self.head_path = os.path.join(self.directory, HEAD_FILE)
        self.lock_path = os.path.join(self.directory, LOCK_FILE)
        # (stat identity of head.json, size of ledger.jsonl, head) as this object last left them:
        # consecutive appends then skip re-reading and re-checking files nobody else has touched.
        # After an append with defer_head the head is newer than head.json, and covers the line.
        self._known_head = None

    # -- locking and reading ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, exclusive):
        try:
            if exclusive:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            else:
                fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # No writer has ever initialised this directory, so there is nothing to be consistent with.
            fd = None
        except OSError as exc:
            raise ledger_os_error("open the ledger lock", self.lock_path, exc) from None
        if fd is None:
            yield
            return
        try:
            if not flock_within(fd, exclusive, self.lock_timeout):
                raise LedgerError("timed out after %gs waiting for the ledger lock %s: another op-dbus run "
                                  "is using the ledger (see `fuser -v %s`)"
                                  % (self.lock_timeout, self.lock_path, self.lock_path))
            yield
        finally:
            os.close(fd)

    def _snapshot(self):
        """Copy head.json and ledger.jsonl as of one moment between appends."""
        if not self._exists():
            return FileSnapshot(exists=False)
        with self._locked(exclusive=False):
            head = head_error = None
            try:
                head = Head.parse(_read_file(self.head_path))
            except FileNotFoundError:
                pass
            except ValueError as exc:
                head_error = str(exc)
            except OSError as exc:
                raise ledger_os_error("read", self.head_path, exc) from None
            try:
                data = _read_file(self.ledger_path)
            except FileNotFoundError:
                data = b""
            except OSError as exc:
                raise ledger_os_error("read", self.ledger_path, exc) from None
        return FileSnapshot(True, head, head_error, data)

    def _accepted_lines(self, snapshot):
        """The lines that make up the ledger once crash residue is recovered (torn tail dropped)."""
        layout = Layout(snapshot)
        lines = layout.lines
        if layout.tail:
            frontier = Frontier()
            frontier.extend(leaf_hash(raw) for raw in lines)
            residue = Residue(layout.tail, frontier)
            lines.extend(split_lines(layout.tail) if residue.foreign else residue.lines)
        return lines

    # -- reading ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self):
        """Keep writers out so that several reads (``verify`` then ``entries``, say) see one ledger.

        Do not ``append`` inside: the writer would wait for this very lock until it times out.
        """
        if not self._exists():
            yield
            return
        with self._locked(exclusive=False):
            yield

    def checkpoint(self):
        """``{origin, size, root}`` of the ledger, without reading more than head.json and any residue.

        Adoptable crash residue is counted, as the next append will. Nothing is verified (that is
        ``verify``'s job), and a ledger that was never written has origin None, size 0 and the
        empty root.
        """
        if not self._exists():
            return {"origin": None, "size": 0, "root": EMPTY_ROOT_HEX}
        with self._locked(exclusive=False):
            try:
                head = Head.parse(_read_file(self.head_path))
            except FileNotFoundError:
                return {"origin": None, "size": 0, "root": EMPTY_ROOT_HEX}
            except ValueError as exc:
                raise LedgerError("%s; %s" % (exc, INVESTIGATE)) from None
            except OSError as exc:
                raise ledger_os_error("read", self.head_path, exc) from None
            tail = self._read_tail(head)
        if tail:
            residue = Residue(tail, head.frontier)
            if residue.lines and not residue.foreign:
                return {"origin": head.origin, "size": residue.frontier.size, "root": residue.frontier.root().hex()}
        return head.checkpoint()

    def entries(self, since=None, limit=None):
        """Parsed entries, oldest first: seq >= ``since`` (negative counts from the end), at most ``limit``.

        Lines that are not JSON objects are skipped; ``verify`` reports them.
        """
        lines = select_entries(self._accepted_lines(self._snapshot()), since, limit)
        result = []
        for raw in lines:
            try:
                obj = DECODER.decode(raw.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                result.append(obj)
        return result

    def last_entry(self):
        """The newest entry, counting crash residue the next append adopts; None for an empty ledger.

        Reads head.json and the end of ledger.jsonl only, and verifies nothing: a run uses it to
        see whether the run before it was interrupted (its intent is the last entry).
        """
        if not self._exists():
            return None
        with self._locked(exclusive=False):
            try:
                head = Head.parse(_read_file(self.head_path))
            except FileNotFoundError:
                return None
            except ValueError as exc:
                raise LedgerError("%s; %s" % (exc, INVESTIGATE)) from None
            except OSError as exc:
                raise ledger_os_error("read", self.head_path, exc) from None
            tail = self._read_tail(head)
            residue = Residue(tail, head.frontier) if tail else None
            if residue is not None and residue.lines and not residue.foreign:
                raw = residue.lines[-1]
            elif head.size:
                raw = self._line_before(head.length)
            else:
                return None
        try:
            entry = DECODER.decode(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            return None
        return entry if isinstance(entry, dict) else None

    def _line_before(self, end):
        """The line of ledger.jsonl that ends, with its newline, at byte END."""
        data = b""
        start = end - 1
        try:
            with open(self.ledger_path, "rb") as handle:
                while start > 0 and b"\n" not in data:
                    step = min(8192, start)
                    start -= step
                    handle.seek(start)
                    data = handle.read(step) + data
        except OSError as exc:
            raise ledger_os_error("read", self.ledger_path, exc) from None
        return data[data.rfind(b"\n") + 1:]

    def inclusion_proof(self, seq):
        """Proof that entry ``seq`` is in the current tree: ``{seq, size, leaf_hash, root, proof}`` in hex."""
        leaves = [leaf_hash(raw) for raw in self._accepted_lines(self._snapshot())]
        if not is_int(seq) or not 0 <= seq < len(leaves):
            raise ValueError("seq %r is not in a ledger of %d entries" % (seq, len(leaves)))
        return {"seq": seq, "size": len(leaves), "leaf_hash": leaves[seq].hex(),
                "root": root_hex(leaves, len(leaves)),
                "proof": [p.hex() for p in inclusion_proof(leaves, seq)]}

    def consistency_proof(self, old_size):
        """Proof that the current tree extends its first ``old_size`` entries:
        ``{old_size, old_root, size, root, proof}`` in hex."""
        leaves = [leaf_hash(raw) for raw in self._accepted_lines(self._snapshot())]
        if not is_int(old_size) or not 0 <= old_size <= len(leaves):
            raise ValueError("old size %r is not between 0 and the ledger's %d entries" % (old_size, len(leaves)))
        return {"old_size": old_size, "old_root": root_hex(leaves, old_size),
                "size": len(leaves), "root": root_hex(leaves, len(leaves)),
                "proof": [p.hex() for p in consistency_proof(leaves, old_size)]}

    # -- verification -------------------------------------------------------------------------

    def verify(self, anchor=None):
        """Re-derive everything from the stored bytes; never modifies anything.

        ``anchor`` is a checkpoint seen earlier (``{origin, size, root}``). Returns
        ``{valid, problems, recoverable, interrupted, checkpoint}`` (``interrupted`` lists the runs
        that died between their intent and their outcome; they do not make the ledger invalid), plus
        ``in_progress`` (the seq of the intent of a run still going) when there is one, plus ``anchor_proof`` (the consistency proof
        from the anchor's size, shaped as ``consistency_proof`` returns it) when there is one; crash residue is listed under
        ``recoverable`` and does not make the ledger invalid, and the checkpoint is the one the
        next append will build on.
        """
        result = verify_snapshot(self._snapshot(), anchor)
        unresolved = [run for run in result["interrupted"] if run["resolved_by"] is None]
        if unresolved and unresolved[-1]["seq"] == result["checkpoint"]["size"] - 1 and self.run_in_progress():
            # The newest intent belongs to a run that is still going: it is not interrupted (yet).
            result["interrupted"].remove(unresolved[-1])
            result["in_progress"] = unresolved[-1]["seq"]
        return result

    def run_lock(self, purpose, timeout=DEFAULT_RUN_LOCK_TIMEOUT):
        return RunLock(self, purpose, timeout)

    def run_in_progress(self):
        """Whether a run holds this ledger's run lock right now."""
        try:
            fd = os.open(os.path.join(self.directory, RUN_LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- writing ------------------------------------------------------------------------------

    def append(self, action, changes, state_sha256=None, actor=None, defer_head=False):
        """Durably add one entry; returns it with the new ``checkpoint`` and any ``recovered`` residue.

        With DEFER_HEAD the entry reaches the disk but head.json is left for the next append of
        this object to update: one sync instead of two, for a write-ahead intent that an outcome
        follows within the same run. Until then, and for good if the run dies, the entry is crash
        residue that readers count and the next writer adopts.

        Raises ValueError for arguments that cannot form a valid entry, LedgerError when the
        ledger cannot be written or is damaged in a way no crash explains.
        """
        if not isinstance(action, str) or not action:
            raise ValueError("action must be a non-empty string")
        if not isinstance(changes, (list, tuple, dict)):
            raise ValueError("changes must be a list or a dict")
        if state_sha256 is not None and not (isinstance(state_sha256, str) and HEX_DIGEST.fullmatch(state_sha256)):
            raise ValueError("state_sha256 must be None or a lowercase hex SHA-256")
        if actor is None:
            actor = _current_user()
        elif not isinstance(actor, str):
            raise ValueError("actor must be a string")
        self._ensure_directory()
        with self._locked(exclusive=True):
            head, recovered = self._prepare_for_write()
            entry = {"action": action, "actor": actor, "changes": changes, "host": self.host,
                     "prev_root": head.root.hex(), "seq": head.size, "state_sha256": state_sha256,
                     "time": utc_now()}
            line = canonical_json(entry)
            # Re-read what will be stored: the caller gets exactly the stored entry (tuples become
            # lists and so on), and an entry the verifier would reject is never written.
            stored, problems = check_line(line, head.size, head.root.hex())
            if problems:
                raise ValueError("the entry would not verify: %s" % problems[0][1])
            self._append_line(head.length, line + b"\n")
            frontier = head.frontier.copy()
            frontier.append(leaf_hash(line))
            new_head = Head.from_frontier(head.origin, head.length + len(line) + 1, frontier)
            if defer_head:
                self._known_head = (_stat_identity(self.head_path), new_head.length, new_head)
            else:
                self._write_head(new_head)
        stored["checkpoint"] = new_head.checkpoint()
        stored["recovered"] = recovered
        return stored

    def _exists(self):
        """Whether the ledger directory exists; os.path.isdir would mistake "permission denied" for "no"."""
        try:
            mode = os.stat(self.directory).st_mode
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ledger_os_error("look up", self.directory, exc) from None
        if not stat.S_ISDIR(mode):
            raise LedgerError("%s exists but is not a directory" % self.directory)
        return True

    def _ledger_size(self):
        try:
            return os.path.getsize(self.ledger_path)
        except FileNotFoundError:
            return 0

    def _ensure_directory(self):
        if self._exists():
            return
        try:
            make_directories(os.path.dirname(self.directory), 0o755)
            make_directories(self.directory, 0o700)
        except OSError as exc:
            raise ledger_os_error("create the ledger directory", self.directory, exc) from None

    def _prepare_for_write(self):
        """Under the exclusive lock: load or create the head and recover crash residue."""
        try:
            identity = _stat_identity(self.head_path)
            known = self._known_head
            if known is not None and known[0] == identity and known[1] == self._ledger_size():
                return known[2], []
            head = Head.parse(_read_file(self.head_path))
            if head.frontier.root() != head.root:
                raise LedgerError("head.json's root does not match its frontier; refusing to append: " + INVESTIGATE)
        except FileNotFoundError:
            return self._initialise(), []
        except ValueError as exc:
            raise LedgerError("%s; refusing to append: %s" % (exc, INVESTIGATE)) from None
        except OSError as exc:
            raise ledger_os_error("read", self.head_path, exc) from None
        tail = self._read_tail(head)
        if not tail:
            return head, []
        residue = Residue(tail, head.frontier)
        if residue.foreign:
            raise LedgerError("ledger.jsonl holds %d bytes after the %d entries head.json covers that no interrupted "
                              "append explains; refusing to append: %s" % (len(tail), head.size, INVESTIGATE))
        if residue.torn:
            try:
                fd = os.open(self.ledger_path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, head.length + len(tail) - residue.torn)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise ledger_os_error("recover", self.ledger_path, exc) from None
        if residue.lines:
            head = Head.from_frontier(head.origin, head.length + len(tail) - residue.torn, residue.frontier)
            self._write_head(head)
        return head, residue.items()

    def _read_tail(self, head):
        """Bytes of ledger.jsonl after the end head.json records, checking that the end is sane."""
        try:
            with open(self.ledger_path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < head.length:
                    raise LedgerError("ledger.jsonl is %d bytes but head.json covers %d: acknowledged entries were "
                                      "removed; %s" % (size, head.length, INVESTIGATE))
                if head.length:
                    handle.seek(head.length - 1)
                    if handle.read(1) != b"\n":
                        raise LedgerError("the end head.json records is not at a line boundary of ledger.jsonl: "
                                          "the file was modified; " + INVESTIGATE)
                return handle.read()
        except FileNotFoundError:
            raise LedgerError("ledger.jsonl is missing although head.json records %d entries; %s"
                              % (head.size, INVESTIGATE)) from None
        except OSError as exc:
            raise ledger_os_error("read", self.ledger_path, exc) from None

    def _initialise(self):
        try:
            if os.path.getsize(self.ledger_path):
                raise LedgerError("head.json is missing although ledger.jsonl holds data; refusing to start a new "
                                  "ledger over it: " + INVESTIGATE)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ledger_os_error("read", self.ledger_path, exc) from None
        try:
            # Creating the ledger makes its directory private, also when another op-dbus file (the
            # state snapshot, say) created the directory first with the umask's permissions.
            os.chmod(self.directory, 0o700)
            fd = os.open(self.ledger_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ledger_os_error("create", self.ledger_path, exc) from None
        head = Head.from_frontier("opdbus:%s:%s" % (self.host, os.urandom(16).hex()), 0, Frontier())
        self._write_head(head)
        # Appends need not sync the directory (see _write_head), but the files must exist.
        try:
            fsync_directory(self.directory)
        except OSError as exc:
            raise ledger_os_error("sync", self.directory, exc) from None
        return head

    def _append_line(self, offset, line):
        try:
            fd = os.open(self.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise ledger_os_error("open", self.ledger_path, exc) from None
        try:
            try:
                write_all(fd, line)
                os.fdatasync(fd)
            except OSError as exc:
                # Leave no partial line behind an error we report (a full disk, typically).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, offset)
                raise ledger_os_error("append to", self.ledger_path, exc) from None
        finally:
            os.close(fd)

    def _write_head(self, head):
        """Replace head.json atomically: temp file, fdatasync, rename.

        The directory is not synced: the entry an append acknowledges is already durable in
        ledger.jsonl, and if a power failure loses the rename, the next writer adopts the
        complete entries head.json does not cover, exactly as after a crash before the rename.
        The temp file is synced before the rename so that head.json is never the new name of
        contents that did not reach the disk. That saves a third of an append's syncs.
        """
        tmp = self.head_path + ".tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, canonical_json(head.to_json()) + b"\n")
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
            self._known_head = (_stat_identity(self.head_path), head.length, head)
        except OSError as exc:
            raise ledger_os_error("write", self.head_path, exc) from None


class RunLockBusy(LedgerError):
    """Another run held the run lock for longer than the caller would wait."""


class RunLock:
    """One op-dbus run at a time per ledger, held from planning through the run's last append.

    Separate from the ledger's own lock, which an append holds for a millisecond and readers
    share: a run holds this one for as long as its jobs take, and readers never wait for it. The
    holder writes who it is into the file, so that a waiting run can say what it waits for.
    """

    def __init__(self, ledger, purpose, timeout=DEFAULT_RUN_LOCK_TIMEOUT):
        self.ledger = ledger
        self.path = os.path.join(ledger.directory, RUN_LOCK_FILE)
        self.purpose = purpose
        self.timeout = timeout
        self.waited = 0.0
        self.waited_for = None
        self._fd = None

    def acquire(self, create=True):
        """Take the lock. Without CREATE (check mode) a ledger directory that does not exist is
        not created; then there is nothing to lock and this returns False."""
        if create:
            self.ledger._ensure_directory()
        elif not self.ledger._exists():
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ledger_os_error("open the run lock", self.path, exc) from None
        started = time.monotonic()
        if not flock_within(fd, True, 0):
            self.waited_for = _read_holder(fd)
            if not flock_within(fd, True, self.timeout, max_delay=0.05):
                os.close(fd)
                raise RunLockBusy("timed out after %gs waiting for the op-dbus run lock %s, held by %s. Let that "
                                  "run finish, or raise the lock timeout" % (self.timeout, self.path, self.waited_for))
            self.waited = time.monotonic() - started
        try:
            os.ftruncate(fd, 0)
            write_all(fd, ("pid %d (%s) since %s" % (os.getpid(), self.purpose, utc_now())).encode("utf-8"))
        except OSError as exc:
            os.close(fd)
            raise ledger_os_error("write", self.path, exc) from None
        self._fd = fd
        return True

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd):
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another op-dbus run"


def _stat_identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _current_user():
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def ledger_from_params(params):
    """The Ledger named by ``ledger_path`` (default: the system ledger), once ``lock_timeout`` checks out."""
    seconds(params, "lock_timeout", 0)
    require_absolute(params, "ledger_path")
    return Ledger(params["ledger_path"] or DEFAULT_LEDGER_DIR)
