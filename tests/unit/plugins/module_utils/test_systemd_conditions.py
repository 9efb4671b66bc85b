# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The start conditions planning evaluates itself, against real files (systemd's meaning of each)."""

import os

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.conditions import evaluate_conditions


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "empty").write_text("")
    (tmp_path / "data").write_text("x")
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "tool", 0o755)
    os.symlink(tmp_path / "dir", tmp_path / "link-to-dir")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    return tmp_path


def plain(kind, path, negate=False):
    return (kind, False, negate, str(path))


def trigger(kind, path, negate=False):
    return (kind, True, negate, str(path))


@pytest.mark.parametrize("kind, name, held", [
    ("ConditionPathExists", "data", True),
    ("ConditionPathExists", "missing", False),
    ("ConditionPathExists", "dangling", False),  # access() follows the link
    ("ConditionPathIsDirectory", "dir", True),
    ("ConditionPathIsDirectory", "link-to-dir", True),
    ("ConditionPathIsDirectory", "data", False),
    ("ConditionPathIsSymbolicLink", "dangling", True),
    ("ConditionPathIsSymbolicLink", "dir", False),
    ("ConditionFileNotEmpty", "data", True),
    ("ConditionFileNotEmpty", "empty", False),
    ("ConditionFileNotEmpty", "dir", False),
    ("ConditionFileIsExecutable", "tool", True),
    ("ConditionFileIsExecutable", "data", False),
    ("ConditionFileIsExecutable", "dir", False),
])
def test_each_path_test_and_its_negation(tree, kind, name, held):
    assert evaluate_conditions([plain(kind, tree / name)]) == (held, [] if held else [f"{kind}={tree / name}"])
    negated = evaluate_conditions([plain(kind, tree / name, negate=True)])
    assert negated == (not held, [f"{kind}=!{tree / name}"] if held else [])


def test_every_plain_condition_must_hold_and_each_failure_is_named(tree):
    met, unmet = evaluate_conditions([plain("ConditionPathExists", tree / "missing"),
                                      plain("ConditionPathIsDirectory", tree / "dir"),
                                      plain("ConditionFileNotEmpty", tree / "empty")])
    assert not met
    assert unmet == [f"ConditionPathExists={tree / 'missing'}", f"ConditionFileNotEmpty={tree / 'empty'}"]


def test_one_holding_trigger_is_enough(tree):
    assert evaluate_conditions([trigger("ConditionPathExists", tree / "missing"),
                                trigger("ConditionPathIsDirectory", tree / "dir")]) == (True, [])


def test_triggers_that_all_fail_are_named(tree):
    assert evaluate_conditions([trigger("ConditionPathExists", tree / "missing"),
                                trigger("ConditionPathExists", tree / "dir", negate=True)]) == (
        False, [f"ConditionPathExists=|{tree / 'missing'}", f"ConditionPathExists=|!{tree / 'dir'}"])


def test_a_failing_plain_condition_outweighs_a_holding_trigger(tree):
    assert evaluate_conditions([trigger("ConditionPathIsDirectory", tree / "dir"),
                                plain("ConditionPathExists", tree / "missing")]) == (
        False, [f"ConditionPathExists={tree / 'missing'}"])


def test_a_kind_only_systemd_evaluates_leaves_the_whole_list_to_it(tree):
    assert evaluate_conditions([plain("ConditionPathExists", tree / "missing"),
                                plain("ConditionVirtualization", "container")]) is None
