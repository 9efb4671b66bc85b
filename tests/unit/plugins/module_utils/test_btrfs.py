# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsers on real btrfs-progs 6.2 outputs (tests/unit/fixtures/btrfs), the client's command handling,
requests refused before anything runs, and what a plan records as it goes (real runs: tests/integration)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.client import BtrfsClient
from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.parse import (
    BtrfsError, Mount, mount_containing, parse_compression, parse_default_id, parse_filesystem_show, parse_mountinfo,
    parse_property, parse_subvolume_list, parse_subvolume_show,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.subvolume import (
    REQUEST_OPTIONS, Plan, manage_subvolume, subvolume_request,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import HostFileError
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "btrfs")
ROOT_UUID = "846797ca-5923-5249-b892-1619fa9f6c24"  # @root in the captured filesystem


def fixture(name):
    """The output stored in a fixture (its first line is the command that produced it)."""
    with open(os.path.join(FIXTURES, name + ".txt")) as handle:
        command, output = handle.read().split("\n", 1)
    assert command.startswith("$ ")
    return output


# --------------------------------------------------------------------------- subvolume show

def test_show_top_level():
    info = parse_subvolume_show(fixture("subvolume_show_top_level"))
    assert info["id"] == 5
    assert info["parent_id"] is None
    assert info["parent_uuid"] is None
    assert info["flags"] == [] and info["read_only"] is False


def test_show_subvolume_with_snapshot_list():
    info = parse_subvolume_show(fixture("subvolume_show_with_snapshots"))
    assert info == {
        "id": 256, "uuid": ROOT_UUID, "parent_uuid": None, "received_uuid": None, "generation": 8,
        "parent_id": 5, "flags": [], "read_only": False,
    }


def test_show_name_with_space_and_nested_subvolume():
    assert parse_subvolume_show(fixture("subvolume_show_space"))["parent_id"] == 256
    nested = parse_subvolume_show(fixture("subvolume_show_nested"))
    assert (nested["id"], nested["parent_id"]) == (258, 256)


def test_show_read_only_snapshot():
    info = parse_subvolume_show(fixture("subvolume_show_readonly_snapshot"))
    assert info["read_only"] is True and info["flags"] == ["readonly"]
    assert info["parent_uuid"] == ROOT_UUID


def test_show_is_the_same_through_a_subvol_mount():
    assert parse_subvolume_show(fixture("subvolume_show_subvol_mount")) == \
        parse_subvolume_show(fixture("subvolume_show_with_snapshots"))


def test_show_ignores_snapshot_names_that_look_like_keys():
    text = fixture("subvolume_show_with_snapshots").replace("\t\t\t\tsnaps/ro", "\t\t\t\tFlags: readonly\n\tUUID: forged")
    assert "Flags: readonly" in text
    assert parse_subvolume_show(text) == parse_subvolume_show(fixture("subvolume_show_with_snapshots"))


def test_show_with_quota_lines_after_the_snapshots():
    text = fixture("subvolume_show_with_snapshots") + "\tQuota group:\t\t0/256\n\t  Limit referenced:\t-\n"
    assert parse_subvolume_show(text)["id"] == 256


@pytest.mark.parametrize("text", ["", "ERROR: Not a Btrfs subvolume: Invalid argument\n", "/\n\tName: \t<FS_TREE>\n"])
def test_show_fails_loudly_on_unexpected_output(text):
    with pytest.raises(BtrfsError, match="unexpected output of btrfs subvolume show"):
        parse_subvolume_show(text)


# --------------------------------------------------------------------------- subvolume list

def test_list_fields():
    entries = parse_subvolume_list(fixture("subvolume_list"))
    assert [(entry["id"], entry["parent_id"]) for entry in entries] == [(256, 5), (257, 256), (258, 256), (259, 5), (260, 5)]
    assert entries[3]["parent_uuid"] == ROOT_UUID
    assert entries[0]["uuid"] == ROOT_UUID and entries[0]["parent_uuid"] is None and entries[0]["received_uuid"] is None
    assert all("path" not in entry for entry in entries)


def test_list_read_only_filter():
    assert [entry["id"] for entry in parse_subvolume_list(fixture("subvolume_list_readonly"))] == [259]


def test_list_is_independent_of_where_it_is_run():
    # The path column differs ("with space" instead of "@root/with space"); the parsed fields do not.
    assert "path with space" in fixture("subvolume_list_subvol_mount")
    assert parse_subvolume_list(fixture("subvolume_list_subvol_mount")) == parse_subvolume_list(fixture("subvolume_list"))


def test_list_skips_continuation_lines_of_names_with_newlines():
    first = fixture("subvolume_list").splitlines()[0]
    assert len(parse_subvolume_list(first + "\nsecond line of the name\n")) == 1


def test_list_fails_loudly_on_a_changed_format():
    with pytest.raises(BtrfsError, match="unexpected output of btrfs subvolume list"):
        parse_subvolume_list("ID 256 gen 8 top level 5 path @root\n")


# --------------------------------------------------------------------------- properties, default, filesystem

@pytest.mark.parametrize("name, expected", [
    ("property_compression_zstd", "zstd"),
    ("property_compression_none", "none"),
    ("property_compression_unset", None),
])
def test_compression_property(name, expected):
    assert parse_compression(parse_property(fixture(name), "compression")) == expected


def test_compression_no_is_none_and_other_properties_are_not_confused():
    assert parse_compression("no") == "none"
    assert parse_property(fixture("property_ro_true"), "ro") == "true"
    assert parse_property(fixture("property_ro_true"), "compression") is None


@pytest.mark.parametrize("name, expected", [("get_default_top_level", 5), ("get_default_subvolume", 256)])
def test_default_id(name, expected):
    assert parse_default_id(fixture(name)) == expected


def test_default_id_fails_loudly():
    with pytest.raises(BtrfsError):
        parse_default_id("ERROR: not a btrfs filesystem\n")


def test_filesystem_show():
    assert parse_filesystem_show(fixture("filesystem_show")) == {
        "uuid": "57877536-0f24-4acc-ba2f-dd823e66a2a2", "devices": ["/dev/loop2"]}


def test_filesystem_show_in_a_container_without_the_device_node():
    assert parse_filesystem_show(fixture("filesystem_show_container"))["devices"] == ["/dev/loop1"]


def test_filesystem_show_label_cannot_forge_the_uuid():
    text = "Label: 'uuid: 00000000-0000-0000-0000-000000000000'  uuid: 57877536-0f24-4acc-ba2f-dd823e66a2a2\n"
    assert parse_filesystem_show(text)["uuid"] == "57877536-0f24-4acc-ba2f-dd823e66a2a2"


# --------------------------------------------------------------------------- mounts

def test_mountinfo_unescapes_paths_and_keeps_the_filesystem_device():
    mounts = parse_mountinfo(fixture("mountinfo"))
    bind = mounts[-1]
    assert bind == Mount(device="0:106", root="/@root/dir", mount_point="/tmp/opdbus-btrfs-fixtures/dir with space",
                         fstype="btrfs", source="/dev/loop2")
    assert {mount.device for mount in mounts if mount.fstype == "btrfs"} == {"0:106"}


def test_mountinfo_in_a_container_with_optional_fields():
    mounts = parse_mountinfo(fixture("mountinfo_container"))
    btrfs = [mount for mount in mounts if mount.fstype == "btrfs"]
    assert [(mount.mount_point, mount.root) for mount in btrfs] == [("/mnt/btrfs", "/")]
    assert mounts[0].fstype == "overlay"


def test_mount_containing_picks_the_longest_and_the_last_stacked_mount():
    mounts = [
        Mount("1:1", "/", "/", "ext4", "/dev/vda"),
        Mount("0:50", "/", "/mnt/pool", "btrfs", "/dev/loop0"),
        Mount("0:51", "/", "/mnt/pool", "btrfs", "/dev/loop1"),
    ]
    assert mount_containing(mounts, "/mnt/pool/a/b").device == "0:51"
    assert mount_containing(mounts, "/mnt/pool").device == "0:51"
    assert mount_containing(mounts, "/mnt/poolside").device == "1:1"
    assert mount_containing(mounts, "/").device == "1:1"


# --------------------------------------------------------------------------- the client's commands

class FakeCommands:
    """The client's run and find callables, answering from a table of argv tuples (without the btrfs binary)."""

    def __init__(self, answers=None, btrfs="/usr/bin/btrfs"):
        self.answers = answers or {}
        self.btrfs = btrfs
        self.calls = []

    def find(self, name):
        return self.btrfs if name == "btrfs" else None

    def run(self, argv, environ=None):
        self.calls.append((argv, environ))
        return self.answers.get(tuple(argv[1:]), (0, "", ""))

    def client(self, **options):
        return BtrfsClient(self.run, self.find, **options)


def test_commands_are_argument_vectors_in_the_c_locale():
    commands = FakeCommands({("subvolume", "get-default", "/mnt/my pool"): (0, fixture("get_default_subvolume"), "")})
    assert commands.client().default_id("/mnt/my pool") == 256
    argv, environ = commands.calls[0]
    assert argv == ["/usr/bin/btrfs", "subvolume", "get-default", "/mnt/my pool"]
    assert environ["LC_ALL"] == "C"


def test_a_failed_command_is_one_error_with_command_rc_and_stderr():
    commands = FakeCommands({("subvolume", "delete", "/pool/x"): (1, "Delete subvolume (no-commit): '/pool/x'\n",
                                                                  "ERROR: Could not destroy subvolume/snapshot: Directory not empty\n")})
    with pytest.raises(BtrfsError) as raised:
        commands.client().delete("/pool/x")
    assert str(raised.value) == ("/usr/bin/btrfs subvolume delete /pool/x failed with exit code 1: "
                                 "ERROR: Could not destroy subvolume/snapshot: Directory not empty")
    assert raised.value.details["cmd"] == ["/usr/bin/btrfs", "subvolume", "delete", "/pool/x"]
    assert raised.value.details["rc"] == 1


def test_missing_btrfs_progs_is_an_actionable_error():
    with pytest.raises(BtrfsError, match="install btrfs-progs"):
        FakeCommands(btrfs=None).client().default_id("/pool")


def test_resolve_gives_paths_inside_the_filesystem():
    commands = FakeCommands({
        ("inspect-internal", "subvolid-resolve", "258", "/sub"): (0, fixture("subvolid_resolve_nested"), ""),
        ("inspect-internal", "subvolid-resolve", "5", "/sub"): (0, fixture("subvolid_resolve_top_level"), ""),
    })
    client = commands.client()
    assert client.resolve(258, "/sub") == "/@root/dir/nested"
    assert client.resolve(5, "/sub") == "/"


def test_subvolume_tree_marks_read_only_subvolumes():
    list_args = ("subvolume", "list", "-p", "-c", "-g", "-u", "-q", "-R")
    commands = FakeCommands({
        list_args + ("/pool",): (0, fixture("subvolume_list"), ""),
        list_args + ("-r", "/pool"): (0, fixture("subvolume_list_readonly"), ""),
    })
    tree = commands.client().subvolume_tree("/pool")
    assert [entry["id"] for entry in tree if entry["read_only"]] == [259]


def test_subvolume_reads_show_and_compression():
    commands = FakeCommands({
        ("subvolume", "show", "/pool/@root"): (0, fixture("subvolume_show_with_snapshots"), ""),
        ("property", "get", "-t", "inode", "/pool/@root", "compression"): (0, fixture("property_compression_zstd"), ""),
    })
    info = commands.client().subvolume("/pool/@root")
    assert (info["id"], info["compression"]) == (256, "zstd")


@pytest.mark.parametrize("method, args, argv", [
    ("snapshot", ("/p/a", "/p/s", True), ["subvolume", "snapshot", "-r", "/p/a", "/p/s"]),
    ("snapshot", ("/p/a", "/p/s"), ["subvolume", "snapshot", "/p/a", "/p/s"]),
    ("set_read_only", ("/p/s", False), ["property", "set", "-t", "subvol", "/p/s", "ro", "false"]),
    ("set_compression", ("/p/s", "none"), ["property", "set", "-t", "inode", "/p/s", "compression", "none"]),
    ("set_default", ("/p/s",), ["subvolume", "set-default", "/p/s"]),
    ("reset_default", ("/p/s",), ["subvolume", "set-default", "5", "/p/s"]),
])
def test_change_commands(method, args, argv):
    commands = FakeCommands()
    getattr(commands.client(), method)(*args)
    assert commands.calls[0][0] == ["/usr/bin/btrfs"] + argv


def test_inspect_tells_directories_files_and_missing_paths_apart(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    mountinfo = tmp_path / "mountinfo"
    # Pretend tmp_path is a BTRFS mount: a directory there is still no subvolume unless it is inode 256.
    mountinfo.write_text(f"1 0 0:50 / {tmp_path} rw - btrfs /dev/loop0 rw\n")
    client = FakeCommands().client(mountinfo=str(mountinfo))
    assert client.inspect(str(tmp_path / "dir")).kind == "directory"
    assert client.inspect(str(tmp_path / "file")).kind == "other"
    missing = client.inspect(str(tmp_path / "no" / "such"))
    assert missing.kind == "missing" and missing.mount.fstype == "btrfs"


def test_inspect_walks_up_past_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 0 0:50 / {tmp_path} rw - btrfs /dev/loop0 rw\n")
    found = FakeCommands().client(mountinfo=str(mountinfo)).inspect(str(tmp_path / "file" / "sub"))
    assert found.kind == "missing" and found.mount.mount_point == str(tmp_path)


def test_unreadable_mount_table_is_a_clear_error(tmp_path):
    with pytest.raises(HostFileError, match=r"^cannot read .*/no-mountinfo: No such file or directory$"):
        FakeCommands().client(mountinfo=str(tmp_path / "no-mountinfo")).mounts()


# --------------------------------------------------------------------------- requests and runs

@pytest.mark.parametrize("options, message", [
    ({"path": "relative/sub"}, "path must be an absolute path"),
    ({"path": "/pool/a\nb"}, "path must be an absolute path without newlines"),
    ({"path": "/pool/a\0b"}, "path must be an absolute path"),
    ({"path": "/pool/s", "snapshot_source": "src"}, "snapshot_source must be an absolute path"),
    ({"path": "/pool/s", "state": "absent", "compression": "zstd", "default": True},
     "compression, default only apply to state=present"),
])
def test_bad_requests_are_refused_before_any_command(options, message):
    with pytest.raises(BtrfsError, match=message):
        subvolume_request(**options)


def test_request_normalises_both_paths(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    request = subvolume_request(f"{tmp_path}/link/./s", snapshot_source=f"{tmp_path}/link/../real/src")
    assert (request["path"], request["snapshot_source"]) == (f"{tmp_path}/real/s", f"{tmp_path}/real/src")


def test_plan_records_each_finished_step_and_what_it_deleted():
    ran = []

    def fail():
        raise BtrfsError("btrfs subvolume delete /p/b failed")

    plan = Plan({"path": "/p", "state": "present"})
    plan.add(lambda: ran.append("a"), {"path": "/p/a", "id": 257, "uuid": "u-a", "parent_uuid": None},
             action="delete", path="/p/a")
    plan.add(lambda: ran.append("c"), action="create", path="/p/c")
    plan.add(fail, {"path": "/p/b", "id": 258, "uuid": "u-b", "parent_uuid": None}, action="delete", path="/p/b")
    progress = {"actions": [], "deleted": []}
    with pytest.raises(BtrfsError):
        plan.apply(progress)
    assert ran == ["a", "c"]
    assert progress == {"actions": [{"action": "delete", "path": "/p/a"}, {"action": "create", "path": "/p/c"}],
                        "deleted": [{"path": "/p/a", "id": 257, "uuid": "u-a", "parent_uuid": None}]}


def task_params(**options):
    return dict(dict.fromkeys(REQUEST_OPTIONS), state="present", recursive=False, lock_timeout=5, **options)


@pytest.mark.parametrize("check_mode", [True, False])
def test_refused_runs_record_nothing_and_create_no_ledger(tmp_path, check_mode):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 0 8:1 / {tmp_path} rw - ext4 /dev/sda1 rw\n")
    ledger = Ledger(str(tmp_path / "ledger"))
    client = FakeCommands().client(mountinfo=str(mountinfo))
    with pytest.raises(BtrfsError, match="must be an absolute path") as relative:
        manage_subvolume(client, ledger, task_params(path="sub"), check_mode, pytest.fail)
    assert relative.value.details == {"changed": False, "actions": [], "entry": None}
    assert not os.path.exists(ledger.directory)
    with pytest.raises(BtrfsError, match="is not on BTRFS: it is on a ext4 filesystem") as elsewhere:
        manage_subvolume(client, ledger, task_params(path=str(tmp_path / "sub")), check_mode, pytest.fail)
    assert elsewhere.value.details == {"changed": False, "actions": [], "entry": None}
    assert ledger.entries() == [] and ledger.checkpoint()["size"] == 0
