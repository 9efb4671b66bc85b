# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""btrfs_subvolume and btrfs_info against real BTRFS on loop devices: inside a test-fleet host
(node1's /mnt/btrfs) and on the controller (a filesystem made here, run with connection local).

The playbooks under targets/ run the acceptance cases and assert on what the modules report and
record; this file prepares what they need and then checks the filesystem with btrfs-progs, and the
ledger's account of it, independently of the collection's code. On the controller the module
records in a temporary ledger: the controller's own /var/lib/op-dbus is never written.
"""

import json
import os
import re
import shlex
import subprocess

import pytest
import yaml
from fleet import ansible_command, ansible_environment  # tests/fleet is on the path (conftest.py)

TARGETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")
CONTROLLER_LABEL = "opdbus controller"
DEFAULT_LEDGER = "/var/lib/op-dbus/blockchain"
CONTROLLER_STATE = "/var/lib/op-dbus"


class Target:
    """A host with a BTRFS whose top level is mounted at ``root``: run shell commands and playbooks there."""

    def __init__(self, name, root, shell, playbook, image, loop, label, ledger=None):
        self.name, self.root = name, root
        self.work = root + "/btrfs_subvolume"
        self.image, self.loop, self.label = image, loop, label
        self.ledger = ledger  # None: the module's default ledger
        self._shell, self._playbook = shell, playbook

    def sh(self, command, check=True):
        return self._shell(command, check)

    def playbook(self, target_dir, **extra_vars):
        extra = dict(extra_vars, btrfs_hosts=self.name, btrfs_root=self.root)
        if self.ledger:
            extra["btrfs_ledger_path"] = self.ledger
        return self._playbook(os.path.join(TARGETS, target_dir, "playbook.yml"), "-e", json.dumps(extra))

    def ledger_entries(self):
        """The ledger's entries, parsed from its file with the json module alone."""
        lines = self.sh(f"cat {shlex.quote(self.ledger or DEFAULT_LEDGER)}/ledger.jsonl").stdout.splitlines()
        return [json.loads(line) for line in lines]

    def property(self, path, name, kind):
        output = self.sh(f"btrfs property get -t {kind} {shlex.quote(path)} {name}").stdout.strip()
        return output.split("=", 1)[1] if output else None

    def show(self, path):
        """``btrfs subvolume show`` as a dict of its key: value lines."""
        output = self.sh(f"btrfs subvolume show {shlex.quote(path)}").stdout
        return dict(re.findall(r"^\t([A-Za-z ()]+):\s*(.*)$", output, re.M))


def local_shell(command, check):
    result = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                            env=dict(os.environ, LC_ALL="C"))
    if check and result.returncode != 0:
        pytest.fail(f"`{command}` failed ({result.returncode}): {result.stderr}")
    return result


@pytest.fixture(scope="module")
def controller_btrfs(tmp_path_factory):
    """A fresh BTRFS on a loop device, mounted in a temporary directory; always unmounted and detached."""
    base = tmp_path_factory.mktemp("btrfs")
    image, mount_point = str(base / "btrfs.img"), str(base / "mnt")
    os.mkdir(mount_point)
    local_shell(f"truncate -s 256M {image} && mkfs.btrfs -q -L {shlex.quote(CONTROLLER_LABEL)} {image}", True)
    loop = local_shell(f"losetup --find --show {image}", True).stdout.strip()
    try:
        local_shell(f"mount -t btrfs {loop} {mount_point}", True)
        yield {"mount": mount_point, "image": image, "loop": loop}
    finally:
        # Lazy unmount: a failed test may have left a bind mount of a subvolume below it.
        local_shell(f"umount -R -l {mount_point}", False)
        local_shell(f"losetup -d {loop}", False)
        os.remove(image)


def tree_state(top):
    """Every path under TOP with its size and modification time; None when TOP does not exist."""
    if not os.path.exists(top):
        return None
    state = {}
    for directory, _dirs, files in os.walk(top):
        for name in [""] + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            state[path] = (info.st_size, info.st_mtime_ns)
    return state


@pytest.fixture(params=["node1", "controller"])
def target(request, tmp_path):
    if request.param == "controller":
        btrfs = request.getfixturevalue("controller_btrfs")

        def playbook(*args):
            argv = [ansible_command("ansible-playbook"), "-i", "localhost,", "-c", "local", *args]
            return subprocess.run(argv, env=ansible_environment(), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=900, check=False)

        before = tree_state(CONTROLLER_STATE)
        # Outside the BTRFS: the playbook's fingerprints of the filesystem must not see ledger writes.
        yield Target("localhost", btrfs["mount"], local_shell, playbook, btrfs["image"], btrfs["loop"], CONTROLLER_LABEL,
                     ledger=str(tmp_path / "ledger"))
        assert tree_state(CONTROLLER_STATE) == before, f"the run wrote the controller's {CONTROLLER_STATE}"
        return

    fleet = request.getfixturevalue("fleet")
    ansible = request.getfixturevalue("ansible")
    info = fleet.state()["hosts"]["node1"]["btrfs"]

    def node_shell(command, check):
        result = fleet.ssh("node1", f"export LC_ALL=C; {command}", check=False, timeout=300)
        if check and result.returncode != 0:
            pytest.fail(f"node1: `{command}` failed ({result.returncode}): {result.stderr}")
        return result

    yield Target("node1", info["path_in_host"], node_shell, lambda *args: ansible("ansible-playbook", *args, check=False),
                 info["image"], info["loop"], f"{fleet.name}-node1")


def run_playbook(target, target_dir, **extra_vars):
    result = target.playbook(target_dir, **extra_vars)
    assert result.returncode == 0, f"{target_dir} on {target.name} failed:\n{result.stdout[-20000:]}\n{result.stderr[-3000:]}"
    return result


def test_acceptance_cases(target):
    work = target.work
    target.sh(f"mkdir {work} {work}/dir {work}/busy-mount && btrfs subvolume create {work}/busy"
              f" && mount --bind {work}/busy {work}/busy-mount")
    try:
        run_playbook(target, "btrfs_subvolume", btrfs_work=work)
    finally:
        target.sh(f"umount {work}/busy-mount", check=False)

    # What the cases left, read with btrfs-progs alone.
    subvolumes = {line.split(" path ", 1)[1] for line in target.sh(f"btrfs subvolume list {target.root}").stdout.splitlines()}
    prefix = os.path.relpath(work, target.root)
    assert subvolumes >= {f"{prefix}/{name}" for name in ("plain", "plain/child", "snap-rw", "snap-zlib", "full", "busy")}
    assert not {f"{prefix}/{name}" for name in ("snap-ro", "dir/child", "tree", "tree/a", "tree/a/b")} & subvolumes
    assert target.sh(f"btrfs subvolume get-default {target.root}").stdout.startswith("ID 5 ")
    plain, snap_rw, snap_zlib = (target.show(f"{work}/{name}") for name in ("plain", "snap-rw", "snap-zlib"))
    assert snap_rw["Parent UUID"] == snap_zlib["Parent UUID"] == plain["UUID"]
    assert (snap_rw["Flags"], snap_zlib["Flags"], target.show(f"{work}/full")["Flags"]) == ("-", "readonly", "readonly")
    assert target.property(f"{work}/plain", "compression", "inode") == "none"
    assert target.property(f"{work}/snap-zlib", "compression", "inode") == "zlib"
    assert target.property(f"{work}/full", "compression", "inode") == "zstd"
    assert target.sh(f"stat -c %i {work}/dir").stdout.strip() != "256", "the plain directory is still one"
    check_ledger_account(target)


def check_ledger_account(target):
    """The ledger tells the story of every subvolume the cases made or deleted under the work
    directory: one outcome per changing case, each right after its intent, and replaying the
    outcomes gives the UUID btrfs-progs shows at every path (or no subvolume, for deleted ones)."""
    entries = target.ledger_entries()
    assert [entry["seq"] for entry in entries] == list(range(len(entries)))
    outcomes = [entry for entry in entries if entry["action"] == "btrfs_subvolume"
                and entry["changes"]["path"].startswith(target.work + "/")]
    with open(os.path.join(TARGETS, "btrfs_subvolume", "playbook.yml"), encoding="utf-8") as handle:
        cases = yaml.safe_load(handle)[0]["vars"]
    assert len(outcomes) == len(cases["btrfs_build"]) + len(cases["btrfs_teardown"])
    assert [entry["changes"]["path"] for entry in outcomes if "error" in entry["changes"]] == []
    there = {}
    for outcome in outcomes:
        intent = entries[outcome["changes"]["intent"]]
        assert intent["seq"] == outcome["seq"] - 1 and intent["changes"]["for"] == "btrfs_subvolume"
        if "error" not in outcome["changes"]:
            assert intent["changes"]["planned"] == outcome["changes"]["actions"]
        for deleted in outcome["changes"].get("deleted", []):
            assert there.get(deleted["path"], deleted["uuid"]) == deleted["uuid"], deleted
            there[deleted["path"]] = None
        if "subvolume" in outcome["changes"]:
            there[outcome["changes"]["path"]] = outcome["changes"]["subvolume"]["uuid"]
    listed = {target.root + "/" + path: uuid for uuid, path in
              re.findall(r"uuid (\S+) path (.*)$", target.sh(f"btrfs subvolume list -u {target.root}").stdout, re.M)}
    assert {path: listed.get(path) for path in there} == there
    assert any(uuid is None for uuid in there.values()) and any(there.values())


def test_info_agrees_with_btrfs_progs(target, tmp_path):
    probe, mount_point = f"{target.root}/info-probe", f"{target.root}/info-mount"
    target.sh(f"btrfs subvolume create {probe} && btrfs subvolume snapshot -r {probe} {probe}-ro && mkdir {mount_point}"
              f" && mount --bind {probe} {mount_point} && btrfs subvolume set-default {probe}")
    result_file = tmp_path / "info.json"
    try:
        run_playbook(target, "btrfs_info", btrfs_result_file=str(result_file))
        listed = target.sh(f"btrfs subvolume list -u -q {target.root}").stdout
        listed_read_only = target.sh(f"btrfs subvolume list -r {target.root}").stdout
    finally:
        target.sh(f"btrfs subvolume set-default 5 {target.root}; umount {mount_point}; rmdir {mount_point};"
                  f" btrfs subvolume delete {probe} {probe}-ro", check=False)
    info = json.loads(result_file.read_text())

    uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", target.image], capture_output=True, text=True, check=True)
    assert info["filesystem"]["uuid"] == uuid.stdout.strip()
    assert info["filesystem"]["label"] == target.label
    assert info["filesystem"]["devices"] == [target.loop]
    expected = {int(sub_id): ("/" + path, uuid, None if parent == "-" else parent)
                for sub_id, parent, uuid, path in re.findall(r"^ID (\d+) .*parent_uuid (\S+)\s+uuid (\S+) path (.*)$", listed, re.M)}
    assert {sub["id"]: (sub["path"], sub["uuid"], sub["parent_uuid"]) for sub in info["subvolumes"]} == expected
    read_only = {int(sub_id) for sub_id in re.findall(r"^ID (\d+) ", listed_read_only, re.M)}
    assert {sub["id"] for sub in info["subvolumes"] if sub["read_only"]} == read_only
    by_path = {sub["path"]: sub for sub in info["subvolumes"]}
    assert by_path["/info-probe"]["mountpoints"] == [mount_point]
    assert by_path["/info-probe-ro"]["parent_uuid"] == by_path["/info-probe"]["uuid"]
    assert info["filesystem"]["default_subvolume"] == {"id": by_path["/info-probe"]["id"], "path": "/info-probe"}
