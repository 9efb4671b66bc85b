# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a task needs from the front end that runs it: a way to warn, and a way to run programs.

A module passes AnsibleModule's own (see _module.py), so that warnings reach the task result and
commands are logged as Ansible logs them; the host command passes these, which need nothing but
the standard library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Where administrators' programs live, also when PATH lacks them (cron, a minimal sudo PATH).
SBIN_DIRS = ("/sbin", "/usr/sbin", "/usr/local/sbin")


def find_program(name):
    """The path of program NAME on PATH or in the sbin directories, or None."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS]))


def run_program(argv, environ=None, data=None):
    """Run ARGV with ENVIRON added to the environment and DATA (text) on its standard input;
    ``(rc, stdout, stderr)`` as text."""
    completed = subprocess.run(argv, env=dict(os.environ, **(environ or {})), input=data,
                               stdin=subprocess.DEVNULL if data is None else None,
                               capture_output=True, text=True, errors="surrogateescape", check=False)
    return completed.returncode, completed.stdout, completed.stderr


def warn_on_stderr(message):
    sys.stderr.write(f"warning: {message}\n")


class TaskContext:
    """The front end's ``warn(message)``, ``run(argv, environ, data)`` and ``find_program(name)``."""

    def __init__(self, warn=warn_on_stderr, run=run_program, find=find_program):
        self.warn = warn
        self.run = run
        self.find_program = find
