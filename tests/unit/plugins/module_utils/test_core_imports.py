# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The core (everything in module_utils but _module.py) imports with ansible-core made unimportable.

The host command and the controller plugins run the same core; only the module layer may need
ansible-core. Each check runs in a fresh interpreter, since this one has ansible loaded already.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MODULE_UTILS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "module_utils")
PACKAGE = "ansible_collections.opdbus.fleet.plugins.module_utils"
MODULE_LAYER = "_module"

# A meta-path finder ahead of every other that refuses ansible and ansible.* (not ansible_collections).
BLOCKER = """
import importlib.abc, sys

class BlockAnsible(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ansible" or name.startswith("ansible."):
            raise ImportError(name + " is blocked: the core must not import ansible-core")
        return None

sys.meta_path.insert(0, BlockAnsible())
for name in sys.argv[1:]:
    __import__(name)
    print("imported", name)
"""


def core_modules():
    root = os.path.normpath(MODULE_UTILS)
    names = []
    for directory, _subdirs, files in os.walk(root):
        for file_name in files:
            if file_name.endswith(".py") and file_name != "__init__.py":
                relative = os.path.relpath(os.path.join(directory, file_name), root)[:-3]
                names.append(PACKAGE + "." + relative.replace(os.sep, "."))
    return sorted(name for name in names if name != f"{PACKAGE}.{MODULE_LAYER}")


def import_blocked(*names):
    # This interpreter's path finds the collection (and ansible-core, which the blocker refuses).
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    return subprocess.run([sys.executable, "-c", BLOCKER, *names], env=environment, capture_output=True, text=True,
                          check=False)


def test_the_core_is_more_than_a_handful_of_files():
    assert len(core_modules()) >= 20


@pytest.mark.parametrize("name", core_modules())
def test_core_module_imports_without_ansible(name):
    result = import_blocked(name)
    assert result.returncode == 0, result.stderr
    assert f"imported {name}" in result.stdout


def test_the_blocker_refuses_the_module_layer():
    result = import_blocked(f"{PACKAGE}.{MODULE_LAYER}")
    assert result.returncode != 0
    assert "ImportError: ansible is blocked" in result.stderr
