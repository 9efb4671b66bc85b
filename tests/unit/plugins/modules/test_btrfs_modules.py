# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The btrfs_subvolume and btrfs_info modules end to end, over the in-memory BTRFS."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.opdbus.fleet.plugins.module_utils.btrfs import BtrfsError
from ansible_collections.opdbus.fleet.plugins.modules import btrfs_info, btrfs_subvolume
from ansible_collections.opdbus.fleet.tests.unit.fixtures.btrfs.fake import POOL, FakeBtrfs


@pytest.fixture
def fs(monkeypatch):
    fake = FakeBtrfs()
    monkeypatch.setattr(btrfs_subvolume, "BtrfsClient", lambda module: fake)
    return fake


def run(capsys, module, check_mode=False, diff=False, **args):
    with patch_module_args(dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def test_check_mode_reports_the_change_and_changes_nothing(fs, capsys):
    checked = run(capsys, btrfs_subvolume, check_mode=True, diff=True, path=POOL + "/a", compression="zstd", read_only=True)
    assert checked["changed"] is True
    assert [action["action"] for action in checked["actions"]] == ["create", "set_compression", "set_read_only"]
    assert checked["diff"] == {
        "before": {"path": POOL + "/a", "state": "absent"},
        "after": {"path": POOL + "/a", "state": "present", "read_only": True, "compression": "zstd", "default": False},
    }
    assert checked["subvolume"]["id"] is None and checked["subvolume"]["flags"] == ["readonly"]
    assert fs.changes == []

    applied = run(capsys, btrfs_subvolume, diff=True, path=POOL + "/a", compression="zstd", read_only=True)
    assert (applied["actions"], applied["diff"]) == (checked["actions"], checked["diff"])
    assert applied["subvolume"]["id"] == 256 and applied["subvolume"]["read_only"] is True

    again = run(capsys, btrfs_subvolume, path=POOL + "/a", compression="zstd", read_only=True)
    assert again["changed"] is False and again["actions"] == []
    assert again["subvolume"] == applied["subvolume"]


def test_check_mode_on_an_existing_subvolume_predicts_its_properties(fs, capsys):
    run(capsys, btrfs_subvolume, path=POOL + "/a", read_only=True)
    checked = run(capsys, btrfs_subvolume, check_mode=True, path=POOL + "/a", read_only=False, default=True)
    assert checked["subvolume"]["id"] == 256
    assert (checked["subvolume"]["read_only"], checked["subvolume"]["flags"], checked["subvolume"]["default"]) == (False, [], True)
    assert fs.subvolume_at(POOL + "/a")["read_only"] is True


def test_absent_returns_no_subvolume(fs, capsys):
    run(capsys, btrfs_subvolume, path=POOL + "/a")
    deleted = run(capsys, btrfs_subvolume, path=POOL + "/a", state="absent")
    assert deleted["changed"] is True and "subvolume" not in deleted


def test_bad_input_fails_with_the_message_and_no_actions(fs, capsys):
    fs.mkdir(POOL + "/dir")
    failed = run(capsys, btrfs_subvolume, path=POOL + "/dir")
    assert failed["failed"] is True and failed["changed"] is False and failed["actions"] == []
    assert "plain directory" in failed["msg"]


def test_a_failing_command_reports_what_was_done_before_it(fs, capsys, monkeypatch):
    def broken(path, compression):
        raise BtrfsError("btrfs property set failed with exit code 1: ERROR: boom", cmd=["btrfs"], rc=1, stderr="ERROR: boom")

    monkeypatch.setattr(fs, "set_compression", broken)
    failed = run(capsys, btrfs_subvolume, path=POOL + "/a", compression="zstd")
    assert failed["failed"] is True and failed["changed"] is True
    assert failed["actions"] == [{"action": "create", "path": POOL + "/a"}]
    assert (failed["rc"], failed["stderr"]) == (1, "ERROR: boom")


def test_info(capsys, monkeypatch):
    class Client(FakeBtrfs):
        def filesystem(self, path):
            return {"uuid": "u", "label": "pool", "devices": ["/dev/loop0"]}

    fake = Client()
    fake.create(POOL + "/a")
    monkeypatch.setattr(btrfs_info, "BtrfsClient", lambda module: fake)
    info = run(capsys, btrfs_info, check_mode=True, path=POOL)
    assert info["changed"] is False
    assert info["filesystem"]["label"] == "pool"
    assert [sub["path"] for sub in info["subvolumes"]] == ["/a"]
    failed = run(capsys, btrfs_info, path="/tmp")
    assert failed["failed"] is True and "not on BTRFS" in failed["msg"]
