# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Content-addressed state blobs: zstd-compressed documents stored under their SHA-256 in snapshots/."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError, host_file_error
from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import atomic_write
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import canonical_json


try:
    import zstandard
except ImportError:
    zstandard = None
SNAPSHOT_DIR = "snapshots"
BLOB_SUFFIX = ".json.zst"
ZSTD_LEVEL = 19  # documents are small and written rarely: spend CPU on size

# Far above any real document (a host's every unit is tens of KiB); a blob that inflates beyond
# it was not written here, and must not be allowed to exhaust the host's memory.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
DIGEST = re.compile(r"[0-9a-f]{64}")
BLOB_NAME = re.compile(r"([0-9a-f]{64})" + re.escape(BLOB_SUFFIX))


class SnapshotError(OpdbusError):
    """A snapshot operation that cannot proceed; the message names what to fix."""


class BlobProblem(SnapshotError):
    """A blob that is not there or not what its name says; ``kind`` is blob_missing or blob_corrupt."""

    def __init__(self, kind, detail):
        super().__init__(detail)
        self.kind = kind


def require_digest(digest):
    """DIGEST, if it is a SHA-256 in lowercase hex; anything else never becomes a path."""
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise SnapshotError(f"{digest!r} is not a SHA-256 digest (64 lowercase hex characters); "
                            "refusing to use it as a blob name")
    return digest


class BlobStore:
    """zstd-compressed canonical JSON documents named by the SHA-256 of their uncompressed bytes."""

    def __init__(self, ledger_dir):
        self.directory = os.path.join(ledger_dir, SNAPSHOT_DIR)

    def path(self, digest):
        return os.path.join(self.directory, require_digest(digest) + BLOB_SUFFIX)

    def size(self, digest):
        """Bytes of the blob on disk, or None when there is no such file (or no such digest)."""
        try:
            info = os.lstat(self.path(digest))
        except (OSError, SnapshotError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def put(self, document):
        """Store DOCUMENT (once per content); returns its digest.

        A blob that is already there is reused only after its content checks out against its
        name; a damaged one is written again.
        """
        raw = canonical_json(document)
        digest = hashlib.sha256(raw).hexdigest()
        try:
            self.read(digest)
            return digest
        except BlobProblem:
            pass
        atomic_write(self.path(digest), zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw), 0o600,
                     directory_mode=0o700)
        return digest

    def read(self, digest):
        """The uncompressed bytes stored under DIGEST, after checking that they still have that digest.

        Raises BlobProblem when the blob is missing or damaged, HostFileError when it cannot be read.
        """
        path = self.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobProblem("blob_missing", f"{path} is missing") from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise BlobProblem("blob_corrupt", f"{path} is a symbolic link, not a blob") from None
            raise host_file_error("read", path, error) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BlobProblem("blob_corrupt", f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as handle:
            try:
                raw = _decompress(handle, path)
            except zstandard.ZstdError as error:
                raise BlobProblem("blob_corrupt", f"{path} is corrupt: not zstd data ({error})") from None
            except OSError as error:
                raise host_file_error("read", path, error) from None
        actual = hashlib.sha256(raw).hexdigest()
        if actual != digest:
            raise BlobProblem("blob_corrupt", f"{path} is corrupt: its content hashes to {actual}, not {digest}")
        return raw

    def get(self, digest):
        """The document stored under DIGEST (see ``read``)."""
        return json.loads(self.read(digest).decode("utf-8"))

    def exists(self, digest):
        return os.path.lexists(self.path(digest))

    def digests(self):
        """Digests of the blob files in the store, whatever the ledger says."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise host_file_error("list", self.directory, error) from None
        return sorted(match.group(1) for match in map(BLOB_NAME.fullmatch, names) if match)

    def check_directory(self):
        """Refuse a store directory that is a symbolic link: deleting through it would delete elsewhere."""
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            return
        except OSError as error:
            raise host_file_error("look up", self.directory, error) from None
        if not stat.S_ISDIR(info.st_mode):
            raise SnapshotError(f"{self.directory} is not a directory (a symbolic link or a file); refusing to "
                                "delete blobs through it. Put the snapshot directory back, or investigate")

    def delete(self, digest):
        path = self.path(digest)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise host_file_error("delete", path, error) from None


def _decompress(handle, path):
    chunks = []
    total = 0
    reader = zstandard.ZstdDecompressor().stream_reader(handle)
    while True:
        chunk = reader.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_DOCUMENT_BYTES:
            raise BlobProblem("blob_corrupt", f"{path} is corrupt: it inflates to more than "
                                              f"{MAX_DOCUMENT_BYTES} bytes, which no state document does")
        chunks.append(chunk)
