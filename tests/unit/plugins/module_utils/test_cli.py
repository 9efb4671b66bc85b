# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command's pure parts: both grammars reach the same commands, settings, and the text it prints."""

from __future__ import annotations

import json

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._cli import commands, render
from ansible_collections.opdbus.fleet.plugins.module_utils._cli.config import ConfigError, load_config
from ansible_collections.opdbus.fleet.plugins.module_utils._cli.main import main, op_dbus_parser, opdbus_parser


@pytest.mark.parametrize("argv, command", [
    (["apply"], commands.apply),
    (["apply", "--check"], commands.apply),
    (["snapshot", "--prune"], commands.snapshot),
    (["rollback", "12", "--check"], commands.rollback),
    (["ledger", "list", "--since", "-5"], commands.ledger_list),
    (["ledger", "show", "3"], commands.ledger_show),
    (["ledger", "verify", "--anchor", "/root/anchor.json"], commands.ledger_verify),
    (["numa", "info"], commands.numa_info),
    (["numa", "stats"], commands.numa_stats),
    (["doctor"], commands.doctor),
])
def test_opdbus_commands(argv, command):
    assert opdbus_parser().parse_args(argv).run is command


@pytest.mark.parametrize("argv, command", [
    (["apply", "--force"], commands.apply),
    (["blockchain", "snapshots"], commands.snapshots),
    (["blockchain", "show", "4"], commands.snapshot_show),
    (["blockchain", "rollback", "4"], commands.rollback),
    (["cache", "numa-info"], commands.numa_info),
    (["cache", "numa-stats"], commands.numa_stats),
    (["doctor"], commands.doctor),
])
def test_the_guides_op_dbus_commands_map_onto_the_same_ones(argv, command):
    arguments = op_dbus_parser().parse_args(argv)
    assert arguments.run is command
    if command in (commands.apply, commands.rollback):
        assert arguments.check is False  # op-dbus has no --check; the commands still read it


def test_json_is_accepted_before_and_after_the_command():
    assert opdbus_parser().parse_args(["--json", "ledger", "list"]).json
    assert opdbus_parser().parse_args(["ledger", "list", "--json"]).json
    assert not opdbus_parser().parse_args(["ledger", "list"]).json


def test_a_bad_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["ledger", "frobnicate"], prog="opdbus")
    assert raised.value.code == commands.EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_a_bad_config_file_is_a_message_and_exit_1(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text('{"retention": {"hourly": 5}, "retension": {}}')
    assert main(["--config", str(config), "doctor"], prog="opdbus") == commands.EXIT_FAILED
    assert "unknown key 'retension'" in capsys.readouterr().err


def test_settings_default_to_none_and_a_missing_file_is_no_error(tmp_path):
    assert load_config(str(tmp_path / "none.json")) == {key: None for key in load_config(str(tmp_path / "x"))}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"retention": {"hourly": 5}, "numa_node": 1}))
    settings = load_config(str(config))
    assert settings["retention"] == {"hourly": 5} and settings["numa_node"] == 1 and settings["state_file"] is None


@pytest.mark.parametrize("text, message", [
    ("[1]", "must hold a JSON object"),
    ("{", "is not JSON"),
    ('{"retention": 5}', "retention must be an object"),
])
def test_unusable_settings_are_refused(tmp_path, text, message):
    config = tmp_path / "config.json"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(config))


def test_state_params_start_from_the_module_defaults():
    params = commands.state_params({"state_file": None, "ledger_path": "/srv/ledger"})
    assert params["src"] == params["state_file"] == "/etc/op-dbus/state.json"
    assert params["ledger_path"] == "/srv/ledger"
    assert (params["scope"], params["job_timeout"], params["lock_timeout"]) == ("system", 90, 120)


NODE = {"id": 0, "cpus": [0, 1, 2, 3, 4, 5, 6, 7], "has_memory": True,
        "memory": {"total_kb": 33554432, "free_kb": 1000, "used_kb": 2000},
        "numastat": {"numa_hit": 942, "numa_miss": 0, "other_node": 58}, "local_hit_ratio": 0.942, "hugepages": {}}


def test_numa_info_prints_the_guides_shape():
    details = {"nodes": [NODE, dict(NODE, id=1)], "devices": [], "current_node": 0, "optimal_node": 0,
               "strategy": "local-node"}
    assert render.numa_info(details).splitlines() == [
        "NUMA Topology", "============", "Node 0: 8 CPUs, 32768 MB RAM", "Node 1: 8 CPUs, 32768 MB RAM", "",
        "Current Node: 0", "Optimal Node: 0", "Strategy: local-node"]


def test_numa_stats_prints_the_local_hit_ratio():
    assert render.numa_stats({"nodes": [NODE]}).splitlines()[2].startswith("Node 0: 94.2% local hits")


def test_optimal_node_is_the_configured_one_else_the_one_with_most_free_memory():
    topology = {"nodes": [NODE, dict(NODE, id=1, memory={"free_kb": 5000})]}
    assert commands.optimal_node(topology, {"numa_node": 0}, 0) == 0
    assert commands.optimal_node(topology, {"numa_node": None}, 0) == 1


def test_apply_text_says_what_ran_and_where_it_is_recorded():
    result = {"changed": True, "actions": [{"unit": "cups.service", "action": "stop"}],
              "files": ["/etc/op-dbus/state.json"], "absent": ["bluetooth.service"], "conditions_unmet": {},
              "entry": {"seq": 7}}
    assert render.apply_result(result, False).splitlines() == [
        "ran: stop cups.service", "wrote: /etc/op-dbus/state.json",
        "not installed, declaration holds: bluetooth.service", "recorded as ledger entry 7"]
    assert render.apply_result(dict(result, entry=None), True).splitlines()[0] == "would run: stop cups.service"


def test_snapshot_text_tells_a_new_snapshot_from_an_unchanged_state():
    point = {"id": 9, "kind": "apply", "time": "T9", "units": None, "label": None}
    taken = {"changed": True, "unchanged": False, "snapshot": dict(point, kind="snapshot", units=3), "entry": {"seq": 9}}
    assert render.snapshot_result(taken, False) == "snapshot 9 taken: 3 units"
    held = {"changed": False, "unchanged": True, "snapshot": point, "entry": None}
    assert render.snapshot_result(held, False) == "state unchanged since restore point 9 (apply, T9): nothing recorded"
    assert render.snapshot_result(dict(held, removed=[]), False).splitlines()[1] == "retention keeps every restore point"


def test_entries_table():
    text = render.entries([
        {"seq": 0, "time": "T0", "action": "intent", "actor": "root", "changes": {"for": "apply", "planned": [{}]}},
        {"seq": 1, "time": "T1", "action": "apply", "actor": "root",
         "changes": {"intent": 0, "units": [{"unit": "cups.service", "actions": ["stop", "mask"]}]}},
        {"seq": 2, "time": "T2", "action": "snapshot", "actor": "root", "changes": {"units": 1, "label": "x"}},
        {"seq": 3, "time": "T3", "action": "role_files", "actor": "root",
         "changes": {"role": "opdbus.fleet.base", "files": ["/a", "/b"], "packages": [], "host_command": "x"}},
    ])
    assert text.splitlines() == ["SEQ  TIME  ACTION      ACTOR  CHANGES",
                                 "0    T0    intent      root   intent: 1 planned",
                                 "1    T1    apply       root   stop mask cups.service",
                                 "2    T2    snapshot    root   1 units (x)",
                                 "3    T3    role_files  root   opdbus.fleet.base: 2 files, 0 packages"]


def test_doctor_marks():
    assert render.checks([{"check": "dbus", "status": "ok", "detail": "fine"},
                          {"check": "btrfs", "status": "warn", "detail": "ext4"}]) == "\u2713 dbus: fine\n\u26a0 btrfs: ext4"


def test_doctor_judges_the_snapshot_age_from_the_one_ledger_report():
    assert commands.check_snapshot_age(None)["status"] == "fail"
    assert commands.check_snapshot_age({"restore_points": [{"kind": "apply", "id": 1}]})["status"] == "warn"
    old = {"restore_points": [{"kind": "snapshot", "id": 2, "time": "2020-01-01T00:00:00.000000Z"}]}
    assert commands.check_snapshot_age(old)["status"] == "warn"


def test_ledger_show_refuses_a_negative_seq_before_reading_anything(capsys):
    assert main(["--config", "/nonexistent/config.json", "ledger", "show", "-1"], prog="opdbus") == commands.EXIT_FAILED
    assert "SEQ must be 0 or more" in capsys.readouterr().err
