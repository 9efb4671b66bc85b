# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation, planning and drift of desired state documents (pure logic, no D-Bus)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import (
    ACTION_ORDER, StateDocumentError, drift, expected_after, plan_unit, snapshot_document, validate,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.units import JobFacts, UnitStatus


def document(units, **top):
    doc = {"version": 1, "plugins": {"systemd": {"units": units}}}
    doc.update(top)
    return doc


def status(active="inactive", file_state="disabled", load="loaded", sub=None):
    """A unit as ListUnitsByNames and UnitFileState report it on a Debian 12 host."""
    return UnitStatus("x.service", load, active, sub or ("running" if active == "active" else "dead"),
                      "/org/freedesktop/systemd1/unit/x_2eservice", file_state)


# ------------------------------------------------------------------------------ validation

def test_the_briefs_example_is_valid():
    units = validate(document({
        "sshd.service": {"active_state": "active", "enabled": True},
        "cups.service": {"active_state": "inactive", "enabled": False, "masked": True},
    }))
    assert units == {"sshd.service": {"active_state": "active", "enabled": True},
                     "cups.service": {"active_state": "inactive", "enabled": False, "masked": True}}


@pytest.mark.parametrize("doc, problem", [
    (document({"cups.service": {"enabld": False}}), 'plugins.systemd.units["cups.service"].enabld: unknown field'),
    (document({}, version=2), "version: unsupported version 2"),
    (document({}, version=True), "version: unsupported version True"),
    (document({}, version="1"), "version: unsupported version '1'"),
    ({"plugins": {}}, "version: missing"),
    (document({}, extra=1), "extra: unknown field"),
    ({"version": 1, "plugins": {"network": {}}}, "plugins.network: unknown plugin"),
    ({"version": 1, "plugins": []}, "plugins: must be a mapping, not a list"),
    ({"version": 1, "plugins": {"systemd": {"unit": {}}}}, "plugins.systemd.unit: unknown field"),
    ({"version": 1, "plugins": {"systemd": {"units": []}}}, "plugins.systemd.units: must be a mapping, not a list"),
    (document({"a.service": "active"}), 'plugins.systemd.units["a.service"]: must be a mapping, not a string'),
    (document({"a.service": {"active_state": "running"}}),
     "plugins.systemd.units[\"a.service\"].active_state: must be 'active' or 'inactive', not 'running'"),
    (document({"a.service": {"enabled": "yes"}}),
     "plugins.systemd.units[\"a.service\"].enabled: must be true or false, not 'yes'"),
    (document({"a.service": {"enabled": 1}}), "plugins.systemd.units[\"a.service\"].enabled: must be true or false, not 1"),
    (document({"bad name.service": {}}), 'plugins.systemd.units["bad name.service"]: invalid unit name'),
    (document({"noext": {}}), 'plugins.systemd.units["noext"]: invalid unit name'),
    (document({"a.servic": {}}), 'plugins.systemd.units["a.servic"]: invalid unit name'),
    (document({"getty@.service": {}}), 'plugins.systemd.units["getty@.service"]: a template unit cannot be declared'),
    (document({"a" * 250 + ".service": {}}), "longer than 255 bytes"),
    (document({"a.service": {"masked": True, "active_state": "active"}}), "a masked unit cannot be active"),
    (document({"a.service": {"masked": True, "enabled": True}}), "a masked unit cannot be enabled"),
    ([], "(document): must be a mapping, not a list"),
])
def test_invalid_documents_name_the_exact_path(doc, problem):
    with pytest.raises(StateDocumentError) as raised:
        validate(doc)
    assert problem in str(raised.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(StateDocumentError) as raised:
        validate({"version": 3, "plugins": {"systemd": {"units": {"a.service": {"x": 1}, "b b.service": {}}}}})
    assert len(raised.value.problems) == 3


def test_instances_of_templates_and_all_unit_types_are_valid():
    names = ["getty@tty1.service", "systemd-fsck@dev-disk-by\\x2duuid.service", "a.socket", "b.timer",
             "-.mount", "c.target", "d.path", "e.slice", "f.scope", "g.swap", "h.automount", "i.device"]
    assert list(validate(document({name: {} for name in names}))) == names


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10)
unit_entries = st.dictionaries(
    st.sampled_from(["active_state", "enabled", "masked", "enabld", ""]) | st.text(max_size=5),
    st.sampled_from(["active", "inactive", True, False, None, 1, "yes"]) | json_values, max_size=4)
unit_names = st.sampled_from(["a.service", "b@c.timer", "bad name", "", "x@.service", "é.service"]) | st.text(max_size=12)
documents = st.fixed_dictionaries({
    "version": st.sampled_from([1, 2, "1", True, None]) | json_values,
    "plugins": st.fixed_dictionaries({"systemd": st.fixed_dictionaries({
        "units": st.dictionaries(unit_names, unit_entries | json_values, max_size=5) | json_values})})
    | json_values,
}) | json_values


@settings(max_examples=400, deadline=None)
@given(documents)
def test_random_documents_validate_or_raise_a_document_error_never_anything_else(doc):
    try:
        units = validate(doc)
    except StateDocumentError as error:
        assert error.problems and all(isinstance(problem, str) for problem in error.problems)
        return
    for name, fields in units.items():
        assert set(fields) <= {"active_state", "enabled", "masked"}
        plan = plan_unit(name, fields, status())
        assert plan.problem or [a for a in ACTION_ORDER if a in plan.actions] == plan.actions


# ------------------------------------------------------------------------------ planning

@pytest.mark.parametrize("desired, live, actions", [
    ({"active_state": "active", "enabled": True}, status(), ["enable", "start"]),
    ({"active_state": "active", "enabled": True}, status("active", "enabled"), []),
    ({"active_state": "inactive", "enabled": False}, status("active", "enabled"), ["disable", "stop"]),
    ({"active_state": "inactive"}, status("failed", "enabled", sub="failed"), []),
    ({"active_state": "active"}, status("failed", "enabled", sub="failed"), ["start"]),
    ({"active_state": "inactive"}, status("activating", "enabled", sub="auto-restart"), ["stop"]),
    ({"masked": True}, status("active", "enabled"), ["stop", "mask"]),
    ({"masked": True, "active_state": "inactive"}, status("inactive", "masked", load="masked"), []),
    ({"masked": False, "active_state": "active", "enabled": True},
     status("inactive", "masked", load="masked"), ["unmask", "enable", "start"]),
    ({"enabled": True}, status("active", "static"), []),
    ({"enabled": True}, status("inactive", "enabled-runtime"), []),
    ({"enabled": False}, status("inactive", "masked", load="masked"), []),
    ({"enabled": False}, status("inactive", "indirect"), ["disable"]),
    ({}, status("active", "enabled"), []),
])
def test_plans_run_the_needed_actions_in_the_safe_order(desired, live, actions):
    plan = plan_unit("x.service", desired, live)
    assert plan.problem is None
    assert plan.actions == actions


@pytest.mark.parametrize("desired, live, problem", [
    ({"active_state": "active"}, None, "no such unit on this host"),
    ({"active_state": "active"}, status(load="not-found", file_state=""), "no such unit on this host"),
    ({"enabled": True}, status("inactive", "masked", load="masked"), "is masked; declare masked: false"),
    ({"active_state": "active"}, status("inactive", "masked", load="masked"), "is masked; declare masked: false"),
    ({"enabled": False}, status("active", "static"), "a static unit cannot be disabled"),
    ({"enabled": True}, status("inactive", "", load="loaded"), "has no unit file to enable"),
])
def test_plans_refuse_what_cannot_be_done(desired, live, problem):
    assert problem in plan_unit("x.service", desired, live).problem


def test_expected_after_is_what_a_fresh_read_would_snapshot():
    plan = plan_unit("x.service", {"masked": True}, status("active", "enabled"))
    assert expected_after(plan) == status("inactive", "masked", load="masked").snapshot()
    plan = plan_unit("x.service", {"masked": False, "active_state": "active", "enabled": True},
                     status("inactive", "masked", load="masked"))
    assert expected_after(plan) == status("active", "enabled").snapshot()


def test_a_snapshot_is_a_valid_document_whose_plan_is_empty():
    live = {"a.service": status("active", "enabled"), "b.service": status("inactive", "masked", load="masked"),
            "c.service": status("active", "static")}
    snapshot = snapshot_document(live)
    units = validate(snapshot)
    assert all(not plan_unit(name, fields, live[name]).actions for name, fields in units.items())


def test_drift_reports_fields_actions_and_problems():
    desired = validate(document({"a.service": {"active_state": "active", "enabled": True},
                                 "b.service": {"active_state": "inactive"},
                                 "gone.service": {"active_state": "active"}}))
    live = {"a.service": status("inactive", "enabled"), "b.service": status("inactive", "disabled")}
    report = drift([plan_unit(name, fields, live.get(name)) for name, fields in desired.items()])
    assert report["a.service"] == {"fields": {"active_state": {"desired": "active", "actual": "inactive"}},
                                   "actions": ["start"]}
    assert "b.service" not in report
    assert "no such unit" in report["gone.service"]["problem"]


# ------------------------------------------------------------------------------ absent units

NOT_FOUND = status(load="not-found", file_state="")


@pytest.mark.parametrize("desired, actions", [
    ({"active_state": "inactive", "enabled": False}, []),
    ({"active_state": "inactive"}, []),
    ({"enabled": False}, []),
    ({"masked": False}, []),
    ({}, []),
    ({"active_state": "inactive", "enabled": False, "masked": True}, ["mask"]),
    ({"masked": True}, ["mask"]),
])
@pytest.mark.parametrize("live", [None, NOT_FOUND])
def test_a_unit_that_is_not_installed_holds_stopped_and_disabled_and_can_be_masked(desired, actions, live):
    plan = plan_unit("cups.service", desired, live)
    assert plan.problem is None and plan.actions == actions and plan.status == "absent"
    assert plan.before == {"active_state": "inactive", "masked": False}


@pytest.mark.parametrize("desired, field", [
    ({"active_state": "active"}, "active_state"),
    ({"enabled": True, "active_state": "inactive"}, "enabled"),
])
def test_a_unit_that_is_not_installed_cannot_be_declared_active_or_enabled(desired, field):
    plan = plan_unit("cups.service", desired, NOT_FOUND)
    assert plan.problem.startswith(f'plugins.systemd.units["cups.service"].{field}: no such unit on this host')
    assert plan.actions == []


def test_absent_units_are_not_drift_and_declared_active_ones_are_problems():
    desired = validate(document({"cups.service": {"active_state": "inactive", "enabled": False},
                                 "gone.service": {"masked": True}, "want.service": {"enabled": True}}))
    report = drift([plan_unit(name, fields, None) for name, fields in desired.items()])
    assert set(report) == {"gone.service", "want.service"}
    assert report["gone.service"] == {"fields": {"masked": {"desired": True, "actual": False}}, "actions": ["mask"]}
    assert "no such unit" in report["want.service"]["problem"]


# ------------------------------------------------------------------------------ what systemd would refuse

def with_facts(unit, condition_result=True, condition_checked=False, unmet=(), refuse_start=False,
               refuse_stop=False, own_file=None):
    unit.job_facts = JobFacts(condition_result, condition_checked, list(unmet), refuse_start, refuse_stop)
    unit.own_file = own_file
    return unit


@pytest.mark.parametrize("desired, live, problem", [
    ({"masked": False}, status("inactive", "masked-runtime", load="masked"),
     "masked at runtime (in /run)"),
    ({"enabled": True}, status("inactive", "bad"), "cannot parse the unit file"),
    ({"enabled": False}, status("inactive", "generated"), "a generated unit cannot be disabled"),
    ({"active_state": "active"}, status("inactive", "disabled", load="bad-setting"), "its load state is bad-setting"),
    ({"active_state": "active"}, status("inactive", "disabled", load="error"), "its load state is error"),
    ({"active_state": "active"}, with_facts(status(), refuse_start=True), "RefuseManualStart=yes"),
    ({"active_state": "inactive"}, with_facts(status("active", "enabled"), refuse_stop=True), "RefuseManualStop=yes"),
    ({"masked": True}, with_facts(status(), own_file="/etc/systemd/system/x.service"),
     "/etc/systemd/system/x.service is the unit's own file"),
])
def test_plans_refuse_what_systemd_would_refuse(desired, live, problem):
    plan = plan_unit("x.service", desired, live)
    assert plan.problem and problem in plan.problem, plan.problem
    assert plan.actions == []


def test_an_unmet_condition_is_reported_not_started_and_not_drift():
    live = with_facts(status("inactive", "enabled"), condition_result=False, condition_checked=True,
                      unmet=["ConditionPathIsDirectory=/sys/class/bluetooth"])
    plan = plan_unit("bluetooth.service", {"active_state": "active", "enabled": True}, live)
    assert plan.problem is None and plan.actions == [] and plan.status == "condition_unmet"
    assert plan.unmet == ["ConditionPathIsDirectory=/sys/class/bluetooth"]
    assert drift([plan]) == {}


def test_a_condition_systemd_never_evaluated_is_tried():
    live = with_facts(status("inactive", "enabled"), condition_result=True, condition_checked=False)
    assert plan_unit("bluetooth.service", {"active_state": "active"}, live).actions == ["start"]


def test_an_unmet_condition_does_not_hold_back_enabling():
    live = with_facts(status("inactive", "disabled"), condition_result=False, condition_checked=True, unmet=["C=x"])
    plan = plan_unit("bluetooth.service", {"active_state": "active", "enabled": True}, live)
    assert plan.actions == ["enable"] and plan.status == "condition_unmet"
