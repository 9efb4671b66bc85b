# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start conditions that planning evaluates itself, as systemd's condition.c does.

A unit whose start its conditions skipped is unloaded soon after, and with it the result, so every
plan would otherwise ask ``systemd-analyze condition`` again: a process start of about 40 ms, most of
a no-op ``opdbus apply``. The path tests below are a plain stat each, with the same meaning as
systemd's; any other kind (virtualization, kernel command line, ...) leaves the decision to systemd.
The parameters come from the bus with specifiers already resolved.
"""

from __future__ import annotations

import os
import stat


def _regular_file(path, test):
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and test(info)


PATH_TESTS = {
    "ConditionPathExists": lambda path: os.access(path, os.F_OK),
    "ConditionPathIsDirectory": os.path.isdir,
    "ConditionPathIsSymbolicLink": os.path.islink,
    "ConditionFileNotEmpty": lambda path: _regular_file(path, lambda info: info.st_size > 0),
    "ConditionFileIsExecutable": lambda path: _regular_file(path, lambda info: info.st_mode & 0o111),
}


def condition_text(kind, trigger, negate, parameter):
    """A condition as its unit file line reads, e.g. ``ConditionPathExists=|!/run/flag``."""
    return f"{kind}={'|' if trigger else ''}{'!' if negate else ''}{parameter}"


def evaluate_conditions(conditions):
    """``(met, unmet)`` for CONDITIONS, ``(kind, trigger, negate, parameter)`` rows, or None when one
    of them is a kind that only systemd evaluates. As in systemd, every plain condition must hold and,
    if there are triggering (``|``) ones, at least one of them; ``unmet`` names what failed."""
    if any(kind not in PATH_TESTS for kind, _trigger, _negate, _parameter in conditions):
        return None
    failed_plain, failed_triggers, any_trigger_held = [], [], False
    for kind, trigger, negate, parameter in conditions:
        held = bool(PATH_TESTS[kind](parameter)) != bool(negate)
        if trigger:
            any_trigger_held = any_trigger_held or held
            if not held:
                failed_triggers.append(condition_text(kind, trigger, negate, parameter))
        elif not held:
            failed_plain.append(condition_text(kind, trigger, negate, parameter))
    unmet = failed_plain + ([] if any_trigger_held else failed_triggers)
    return not unmet, unmet
