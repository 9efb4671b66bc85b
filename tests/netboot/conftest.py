# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netboot install tests: the disk layout and its refusals on loop devices, and a VM that boots from
the network, installs itself and boots from its own disk."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fleet"))

from fleet import ansible_command, ansible_environment  # noqa: E402  (path set up just above)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session", autouse=True)
def requires_root():
    if os.geteuid() != 0:
        pytest.fail("netboot tests use loop devices, nginx and QEMU and need root; run `make netboot` as root")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_local_module(module, arguments, check_mode=False):
    """Run MODULE on this machine (the controller as the installer host) and return its result."""
    argv = [ansible_command("ansible"), "-i", "localhost,", "-c", "local", "localhost", "-m", module,
            "-a", json.dumps(arguments), "-e", f"ansible_python_interpreter={sys.executable}"]
    if check_mode:
        argv.append("--check")
    result = subprocess.run(argv, env=ansible_environment(ANSIBLE_CALLBACK_RESULT_FORMAT="json",
                                                          ANSIBLE_LOAD_CALLBACK_PLUGINS="1"),
                            capture_output=True, text=True, check=False)
    assert "=>" in result.stdout, result.stdout + result.stderr
    header, reply = result.stdout.split("=>", 1)
    parsed = json.loads(reply)
    if "| FAILED" in header:
        parsed.setdefault("failed", True)
    return parsed


class Phases:
    """Prints how long each phase of a test took, as it ends."""

    def __init__(self, title):
        self.title = title
        self.started = self.last = time.monotonic()

    def done(self, phase):
        now = time.monotonic()
        print(f"{self.title}: {phase}: {now - self.last:.0f} s (total {now - self.started:.0f} s)", flush=True)
        self.last = now
