# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""opdbus_numa_info end to end on sysfs fixture trees (opdbus_numa needs systemd: see the integration target)."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.opdbus.fleet.plugins.modules import opdbus_numa_info
from ansible_collections.opdbus.fleet.tests.unit.fixtures.numa import sysfs


def run(capsys, module, check_mode=False, diff=False, **args):
    with patch_module_args(dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def test_info_reports_the_topology(capsys, tmp_path):
    facts = run(capsys, opdbus_numa_info, sysfs_root=sysfs.dgx().write(tmp_path))
    assert facts["changed"] is False and facts["node_ids"] == list(range(8))
    assert len(facts["nodes"]) == 8 and len(facts["distance_matrix"]) == 8
    assert [device["recommended_node"] for device in facts["devices"] if device["kind"] == "gpu"] == [
        node for _address, node in sysfs.DGX_GPUS]
    assert "query_result" not in facts


def test_info_query(capsys, tmp_path):
    answer = run(capsys, opdbus_numa_info, sysfs_root=sysfs.dgx().write(tmp_path),
                 query="devices[?kind=='nic'].{name: names[0], node: recommended_node}")
    assert answer["query_result"][0] == {"name": "enp12s0", "node": 3}
    assert len(answer["query_result"]) == 10


def test_info_on_a_path_that_is_not_sysfs(capsys, tmp_path):
    failed = run(capsys, opdbus_numa_info, sysfs_root=str(tmp_path))
    assert failed["failed"] is True
    assert failed["msg"].endswith("is not a sysfs tree: it has neither devices/system/node/online nor devices/system/cpu/online")
