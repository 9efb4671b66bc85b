# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the host command as one Python zip application from the collection's own module_utils.

Runs on the controller: ``build_host_command.py COLLECTION_ROOT OUTPUT_DIR`` writes
``OUTPUT_DIR/opdbus-<sha256>.pyz`` (if it is not there already) and prints its path. The bytes depend
only on the sources (fixed timestamps, sorted names), so the copy to the hosts is idempotent.
Only the standard library is used, and nothing but module_utils goes in: the command needs no
ansible-core.
"""

import hashlib
import io
import os
import sys
import zipfile

PACKAGE_ROOT = "ansible_collections/opdbus/fleet"
# Run from the zip, Python would compile every module at each start (a zip holds no __pycache__),
# so the first run unpacks the archive into a cache named after its size and modification time (a
# new copy of the command gets a new directory, and removes the copies of earlier versions); later
# runs import from there, compiled.
MAIN = '''import os, sys
archive = os.path.dirname(os.path.abspath(__file__))
if os.path.isfile(archive):
    info = os.stat(archive)
    unpacked = f"/var/cache/opdbus/{info.st_size}-{info.st_mtime_ns}"
    if not os.path.isdir(unpacked):
        import zipfile
        try:
            staging = f"{unpacked}.{os.getpid()}"
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
            os.replace(staging, unpacked)
        except OSError:
            unpacked = archive  # not root: run from the zip itself
        else:
            import shutil, time
            for name in os.listdir("/var/cache/opdbus"):  # earlier versions, unpacked over an hour ago
                earlier = os.path.join("/var/cache/opdbus", name)
                try:
                    stale = earlier != unpacked and os.stat(earlier).st_mtime < time.time() - 3600
                except OSError:
                    continue
                if stale:
                    shutil.rmtree(earlier, ignore_errors=True)
    sys.path.insert(0, unpacked)
from ansible_collections.opdbus.fleet.plugins.module_utils._cli.main import main
sys.exit(main())
'''
EPOCH = (1980, 1, 1, 0, 0, 0)


def sources(collection_root):
    """``{archive name: bytes}`` of every module_utils file, with an empty __init__.py per package."""
    files = {}
    base = os.path.join(collection_root, "plugins", "module_utils")
    for directory, subdirectories, names in os.walk(base):
        subdirectories[:] = sorted(name for name in subdirectories if name != "__pycache__")
        relative = os.path.relpath(directory, collection_root).replace(os.sep, "/")
        for name in sorted(names):
            if name.endswith(".py"):
                with open(os.path.join(directory, name), "rb") as handle:
                    files[f"{PACKAGE_ROOT}/{relative}/{name}"] = handle.read()
    packages = {name.rsplit("/", 1)[0] for name in files}
    for package in list(packages):
        parts = package.split("/")
        packages.update("/".join(parts[:index]) for index in range(1, len(parts)))
    for package in packages:
        files.setdefault(f"{package}/__init__.py", b"")
    files["__main__.py"] = MAIN.encode()
    return files


def archive(files):
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/python3\n")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            bundle.writestr(info, files[name])
    return buffer.getvalue()


def main(collection_root, output_dir):
    data = archive(sources(collection_root))
    path = os.path.join(output_dir, f"opdbus-{hashlib.sha256(data).hexdigest()[:16]}.pyz")
    if not os.path.exists(path):
        os.makedirs(output_dir, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
        for name in os.listdir(output_dir):
            if name.startswith("opdbus-") and name.endswith(".pyz") and name != os.path.basename(path):
                os.unlink(os.path.join(output_dir, name))
    print(path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
