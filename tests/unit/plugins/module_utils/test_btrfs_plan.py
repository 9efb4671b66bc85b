# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""plan_subvolume against an in-memory BTRFS: the actions, idempotence, and refusing bad input unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.opdbus.fleet.plugins.module_utils.btrfs import (
    BtrfsError,
    Mount,
    describe_filesystem,
    plan_subvolume,
)
from ansible_collections.opdbus.fleet.tests.unit.fixtures.btrfs.fake import POOL, FakeBtrfs


def converge(fs, **request):
    """Plan, check that planning changed nothing, apply, and check that a second plan has nothing to do."""
    changes = list(fs.changes)
    plan = plan_subvolume(fs, **request)
    assert fs.changes == changes, "planning must not change anything"
    done = []
    plan.apply(done)
    assert done == plan.actions
    again = plan_subvolume(fs, **request)
    assert again.actions == [], f"not idempotent: {again.actions}"
    assert again.before == plan.after, "the predicted state is the state reached"
    return plan


def kinds(plan):
    return [action["action"] for action in plan.actions]


def refused(fs, match, **request):
    changes = list(fs.changes)
    with pytest.raises(BtrfsError, match=match):
        plan_subvolume(fs, **request)
    assert fs.changes == changes


@pytest.fixture
def fs():
    return FakeBtrfs()


# --------------------------------------------------------------------------- present

def test_create(fs):
    plan = converge(fs, path=POOL + "/a")
    assert plan.actions == [{"action": "create", "path": POOL + "/a"}]
    assert plan.before == {"path": POOL + "/a", "state": "absent"}
    assert plan.after == {"path": POOL + "/a", "state": "present", "read_only": False, "compression": None, "default": False}


def test_nested_create_in_a_subvolume_and_in_a_plain_directory(fs):
    converge(fs, path=POOL + "/a")
    assert kinds(converge(fs, path=POOL + "/a/b")) == ["create"]
    fs.mkdir(POOL + "/dir")
    assert kinds(converge(fs, path=POOL + "/dir/c")) == ["create"]
    assert fs.subvolume_at(POOL + "/a/b")["parent_id"] == fs.subvolume_at(POOL + "/a")["id"]


def test_missing_parents_need_recursive_and_become_subvolumes(fs):
    refused(fs, "parent directory /pool/x/y does not exist.*recursive=true", path=POOL + "/x/y/z")
    plan = converge(fs, path=POOL + "/x/y/z", recursive=True)
    assert [action["path"] for action in plan.actions] == [POOL + "/x", POOL + "/x/y", POOL + "/x/y/z"]


def test_snapshot_read_write_and_read_only(fs):
    converge(fs, path=POOL + "/a", compression="zstd")
    rw = converge(fs, path=POOL + "/rw", snapshot_source=POOL + "/a")
    assert rw.actions == [{"action": "snapshot", "path": POOL + "/rw", "source": POOL + "/a", "read_only": False}]
    assert rw.after["compression"] == "zstd", "a snapshot copies the source's compression"
    ro = converge(fs, path=POOL + "/ro", snapshot_source=POOL + "/a", read_only=True)
    assert ro.actions == [{"action": "snapshot", "path": POOL + "/ro", "source": POOL + "/a", "read_only": True}]
    assert fs.subvolume_at(POOL + "/ro")["parent_uuid"] == fs.subvolume_at(POOL + "/a")["uuid"]


def test_read_only_snapshot_with_other_compression_is_taken_writable_first(fs):
    converge(fs, path=POOL + "/a", compression="zstd")
    plan = converge(fs, path=POOL + "/s", snapshot_source=POOL + "/a", read_only=True, compression="lzo")
    assert kinds(plan) == ["snapshot", "set_compression", "set_read_only"]
    assert plan.actions[0]["read_only"] is False


def test_toggle_read_only(fs):
    converge(fs, path=POOL + "/a")
    assert converge(fs, path=POOL + "/a", read_only=True).actions == [
        {"action": "set_read_only", "path": POOL + "/a", "read_only": True}]
    assert converge(fs, path=POOL + "/a", read_only=False).actions == [
        {"action": "set_read_only", "path": POOL + "/a", "read_only": False}]


def test_set_change_and_clear_compression(fs):
    converge(fs, path=POOL + "/a")
    for value in ("zstd", "lzo", "none"):
        assert converge(fs, path=POOL + "/a", compression=value).actions == [
            {"action": "set_compression", "path": POOL + "/a", "compression": value}]


def test_compression_of_a_read_only_subvolume(fs):
    converge(fs, path=POOL + "/a", read_only=True)
    refused(fs, "read-only.*set read_only=false", path=POOL + "/a", compression="zstd")
    assert kinds(converge(fs, path=POOL + "/a", compression="zstd", read_only=False)) == ["set_read_only", "set_compression"]


def test_set_and_reset_default(fs):
    converge(fs, path=POOL + "/a")
    assert kinds(converge(fs, path=POOL + "/a", default=True)) == ["set_default"]
    assert kinds(converge(fs, path=POOL + "/a", default=False)) == ["reset_default"]
    assert fs.default == 5


def test_everything_at_once_on_a_new_subvolume(fs):
    plan = converge(fs, path=POOL + "/a", compression="zstd", read_only=True, default=True)
    assert kinds(plan) == ["create", "set_compression", "set_read_only", "set_default"]


def test_unmanaged_options_are_left_alone(fs):
    converge(fs, path=POOL + "/a", compression="zstd", read_only=True, default=True)
    assert converge(fs, path=POOL + "/a").actions == []


def test_the_top_level_can_be_managed_but_not_deleted_or_undefaulted(fs):
    assert kinds(converge(fs, path=POOL, compression="zstd")) == ["set_compression"]
    refused(fs, "top-level subvolume", path=POOL, default=False)
    refused(fs, "top-level subvolume of its filesystem, which cannot be deleted", path=POOL, state="absent")


def test_paths_are_normalised(fs):
    plan = converge(fs, path=POOL + "//x/./y/../z", recursive=True)
    assert [action["path"] for action in plan.actions] == [POOL + "/x", POOL + "/x/z"]


# --------------------------------------------------------------------------- bad input

def test_path_not_on_btrfs(fs):
    refused(fs, "/tmp/x is not on BTRFS: it is on a ext4 filesystem mounted at /", path="/tmp/x")
    refused(fs, "not on BTRFS", path="/tmp/x", state="absent")


def test_relative_path(fs):
    refused(fs, "absolute path", path="pool/a")


def test_name_collision_with_a_plain_directory(fs):
    fs.mkdir(POOL + "/dir")
    refused(fs, "/pool/dir exists and is a plain directory, not a BTRFS subvolume", path=POOL + "/dir")
    refused(fs, "plain directory", path=POOL + "/dir", state="absent")


def test_snapshot_source_must_be_a_subvolume(fs):
    fs.mkdir(POOL + "/dir")
    refused(fs, "snapshot_source /pool/dir is not a BTRFS subvolume", path=POOL + "/s", snapshot_source=POOL + "/dir")
    refused(fs, "snapshot_source /pool/nope does not exist", path=POOL + "/s", snapshot_source=POOL + "/nope")


def test_existing_subvolume_must_be_a_snapshot_of_the_source(fs):
    converge(fs, path=POOL + "/a")
    converge(fs, path=POOL + "/b")
    refused(fs, "/pool/b exists but is not a snapshot of /pool/a", path=POOL + "/b", snapshot_source=POOL + "/a")


def test_options_of_present_are_refused_with_absent(fs):
    refused(fs, "read_only, compression only apply to state=present", path=POOL + "/a", state="absent",
            read_only=True, compression="zstd")


# --------------------------------------------------------------------------- absent

def test_delete_and_delete_again(fs):
    converge(fs, path=POOL + "/a")
    plan = converge(fs, path=POOL + "/a", state="absent")
    assert plan.actions == [{"action": "delete", "path": POOL + "/a"}]
    assert plan.after == {"path": POOL + "/a", "state": "absent"}


def test_delete_nested_needs_recursive_and_goes_deepest_first(fs):
    converge(fs, path=POOL + "/a/b/c", recursive=True)
    fs.mkdir(POOL + "/a/dir")
    converge(fs, path=POOL + "/a/dir/d")
    refused(fs, r"contains nested subvolumes \(/pool/a/b, /pool/a/b/c, /pool/a/dir/d\); set recursive=true",
            path=POOL + "/a", state="absent")
    plan = converge(fs, path=POOL + "/a", state="absent", recursive=True)
    paths = [action["path"] for action in plan.actions]
    assert paths.index(POOL + "/a/b/c") < paths.index(POOL + "/a/b") < paths.index(POOL + "/a")
    assert sorted(paths) == [POOL + "/a", POOL + "/a/b", POOL + "/a/b/c", POOL + "/a/dir/d"]


def test_deleting_the_default_subvolume_or_one_nested_in_it_is_refused(fs):
    converge(fs, path=POOL + "/a/b", recursive=True, default=True)
    refused(fs, "/pool/a/b is the default subvolume", path=POOL + "/a/b", state="absent")
    refused(fs, "/pool/a/b is the default subvolume", path=POOL + "/a", state="absent", recursive=True)


def test_deleting_a_mounted_subvolume_is_refused(fs):
    converge(fs, path=POOL + "/a/b", recursive=True)
    fs.extra_mounts.append(Mount("0:50", "/a/b", "/srv/b", "btrfs", "/dev/loop0"))
    refused(fs, r"/pool/a/b \(or something in it\) is mounted at /srv/b", path=POOL + "/a/b", state="absent")
    refused(fs, "mounted at /srv/b", path=POOL + "/a", state="absent", recursive=True)
    # The same subvolume path on another filesystem is not this one.
    fs.extra_mounts[0] = Mount("0:99", "/a/b", "/srv/b", "btrfs", "/dev/loop9")
    converge(fs, path=POOL + "/a", state="absent", recursive=True)


def test_deleting_from_a_read_only_subvolume_is_refused_before_anything_is_deleted(fs):
    converge(fs, path=POOL + "/a/b/c", recursive=True)
    converge(fs, path=POOL + "/a/b", read_only=True)
    refused(fs, r"sits in a read-only subvolume \(/a/b", path=POOL + "/a", state="absent", recursive=True)


# --------------------------------------------------------------------------- any request, any starting point

OPTIONAL_BOOL = st.sampled_from([None, True, False])


@st.composite
def scenarios(draw):
    fs = FakeBtrfs()
    plan_subvolume(fs, path=POOL + "/src", compression=draw(st.sampled_from([None, "zstd", "lzo"]))).apply([])
    if draw(st.booleans()):
        plan_subvolume(fs, path=POOL + "/t", read_only=draw(OPTIONAL_BOOL), default=draw(OPTIONAL_BOOL),
                       compression=draw(st.sampled_from([None, "zstd", "none"]))).apply([])
    fs.changes.clear()
    request = dict(
        path=POOL + "/t",
        snapshot_source=draw(st.sampled_from([None, POOL + "/src"])),
        read_only=draw(OPTIONAL_BOOL),
        compression=draw(st.sampled_from([None, "zstd", "lzo", "zlib", "none"])),
        default=draw(OPTIONAL_BOOL),
    )
    return fs, request


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_any_request_is_refused_unchanged_or_converges_in_one_run(scenario):
    fs, request = scenario
    try:
        plan = plan_subvolume(fs, **request)
    except BtrfsError:
        assert fs.changes == []
        return
    assert fs.changes == []
    plan.apply([])
    assert plan_subvolume(fs, **request).actions == []
    target = fs.subvolume_at(POOL + "/t")
    reached = {"read_only": target["read_only"], "compression": target["compression"], "default": fs.default == target["id"]}
    assert reached == {key: plan.after[key] for key in reached}
    for option in ("read_only", "compression", "default"):
        if request[option] is not None:
            assert reached[option] == request[option]


# --------------------------------------------------------------------------- btrfs_info

def test_describe_filesystem_lists_subvolumes_with_paths_and_mountpoints():
    class Client(FakeBtrfs):
        def filesystem(self, path):
            return {"uuid": "u", "label": None, "devices": ["/dev/loop0"]}

    fs = Client()
    plan_subvolume(fs, path=POOL + "/a/b", recursive=True).apply([])
    fs.extra_mounts.append(Mount("0:50", "/a", "/srv/a", "btrfs", "/dev/loop0"))
    info = describe_filesystem(fs, POOL)
    assert info["filesystem"]["default_subvolume"] == {"id": 5, "path": "/"}
    assert [(sub["path"], sub["mountpoints"]) for sub in info["subvolumes"]] == [("/a", ["/srv/a"]), ("/a/b", [])]
    with pytest.raises(BtrfsError, match="not on BTRFS"):
        describe_filesystem(fs, "/tmp")
    with pytest.raises(BtrfsError, match="does not exist"):
        describe_filesystem(fs, POOL + "/nope")
