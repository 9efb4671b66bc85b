# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the AnsiballZ payload of every module, now and at a baseline commit.

The payload is what each task sends to a host: the module, every module_utils file it imports
(found by ansible-core's own dependency finder) and ansible's basic module_utils, zipped and
base64-encoded. It is built here with ansible-core's ``modify_module``, the function the
controller uses, for this checkout and for ``git archive BASELINE`` of the same repository.
Prints each size against the baseline and exits 1 when ``opdbus_state``'s grew (issue 15: the
module_utils layout must not make the hot module's payload bigger).
"""

import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The last commit before module_utils was laid out as core folders and a module layer (issue 15).
BASELINE = os.environ.get("PAYLOAD_BASELINE", "89591083289506735b8be7d86ffcadce2ec2e88d")
WATCHED = "opdbus_state"

MEASURE = r"""
import json, sys
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, module_loader
from ansible.template import Templar

init_plugin_loader()
templar = Templar(loader=DataLoader())
sizes = {}
for name in sys.argv[1:]:
    path = module_loader.find_plugin("opdbus.fleet." + name)
    built = module_common.modify_module(module_name=name, module_path=path, module_args={}, templar=templar,
                                        task_vars={"ansible_python_interpreter": "/usr/bin/python3"},
                                        module_compression="ZIP_DEFLATED")
    sizes[name] = len(built.b_module_data)
print(json.dumps(sizes))
"""


def module_names(collection):
    directory = os.path.join(collection, "plugins", "modules")
    return sorted(name[:-3] for name in os.listdir(directory) if name.endswith(".py") and name != "__init__.py")


def payload_sizes(collections_path, names):
    """``{module: bytes}`` built against the collection under COLLECTIONS_PATH, in a fresh interpreter."""
    environment = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, PYTHONPATH=collections_path)
    output = subprocess.run([sys.executable, "-c", MEASURE, *names], env=environment, capture_output=True, text=True,
                            check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def baseline_sizes(names, work):
    """Payload sizes of the BASELINE commit's collection, unpacked from git into WORK."""
    collection = os.path.join(work, "ansible_collections", "opdbus", "fleet")
    os.makedirs(collection)
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", BASELINE, "plugins", "meta", "galaxy.yml"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", collection], input=archive, check=True)
    present = set(module_names(collection))
    return payload_sizes(work, [name for name in names if name in present])


def main():
    names = module_names(REPO)
    now = payload_sizes(os.path.join(REPO, "build"), names)
    with tempfile.TemporaryDirectory() as work:
        before = baseline_sizes(names, work)
    print(f"AnsiballZ payload (bytes, base64 zip) now and at {BASELINE[:12]}:")
    for name in names:
        if name in before:
            print(f"  {name:20} {before[name]:>8} -> {now[name]:>8}  ({now[name] / before[name]:.3f}x)")
        else:
            print(f"  {name:20} {'new':>8} -> {now[name]:>8}")
    grew = now[WATCHED] > before.get(WATCHED, now[WATCHED])
    print(f"{WATCHED} payload: {before.get(WATCHED)} -> {now[WATCHED]} bytes: {'FAIL (grew)' if grew else 'PASS'}")
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
