# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter the roles use to refuse a bad declaration on the controller: the modules' own validator."""

from __future__ import annotations

from ansible_collections.opdbus.fleet.plugins.filter.state_document_problems import FilterModule


PROBLEMS = FilterModule().filters()["state_document_problems"]


def test_a_valid_document_has_no_problems():
    assert PROBLEMS({"version": 1, "plugins": {"systemd": {"units": {"cups.service": {"enabled": False}}}}}) == []


def test_each_problem_names_its_path():
    problems = PROBLEMS({"version": 2, "plugins": {"systemd": {"units": {"cups.service": {"enabld": False}}}}})
    assert any(problem.startswith("version: unsupported version 2") for problem in problems)
    assert 'plugins.systemd.units["cups.service"].enabld: unknown field (known: active_state, enabled, masked)' in problems


def test_a_document_that_is_not_a_mapping():
    assert PROBLEMS(["not", "a", "document"]) == ["(document): must be a mapping, not a list"]
