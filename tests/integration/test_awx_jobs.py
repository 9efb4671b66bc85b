# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""examples/awx-project run as AWX runs a job template: by ansible-runner, on a private data directory.

The directory is laid out as AWX lays it out for a job with fact storage on: the synced project with
its collections installed from collections/requirements.yml, an inventory script, the survey's extra
variables, the machine credential's key (loaded into ssh-agent by ansible-runner), and the hosts'
stored facts written to artifacts/JOB/fact_cache, the jsonfile cache the job uses. After a job AWX
keeps the cache files the job wrote; the next job's directory is new, and gets them back. Nothing else
survives between jobs, so the only way the second job can know the first job's checkpoints is the
fact cache.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
from fleet import REPO_ROOT, SSH_OPTIONS, ansible_command, booted_fleet

PROJECT = os.path.join(REPO_ROOT, "examples", "awx-project")
GROUPS = {"node1": "laptops", "node2": "workstations"}
CHECKPOINT_TASK = "Verify the consistency proof on the controller and store the checkpoint"
LEDGER = "/var/lib/op-dbus/blockchain"
COPY = "/root/ledger-copy"


@pytest.fixture(scope="module")
def fleet():
    with booted_fleet(os.environ.get("OPDBUS_AWX_FLEET_NAME", "itestawx"), len(GROUPS)) as awx_fleet:
        yield awx_fleet


def execution_environment():
    """A clean environment, as in an execution environment: no tests/ansible.cfg, no build/ collections."""
    return {"PATH": os.path.dirname(ansible_command("ansible-runner")) + ":/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


class Job:
    """One job template launch: its private data directory, then its outcome as ansible-runner left it."""

    def __init__(self, root, job_id):
        self.job_id = job_id
        self.private_data_dir = root / f"job{job_id}"
        self.artifacts = self.private_data_dir / "artifacts" / str(job_id)
        self.fact_cache = self.artifacts / "fact_cache"

    def lay_out(self, fleet, collection_tarball, extra_vars, facts_from=None, cmdline=""):
        project = self.private_data_dir / "project"
        shutil.copytree(PROJECT, project)
        # The project names the collection on Galaxy; here the private hub is the built tarball.
        (project / "collections" / "requirements.yml").write_text(
            json.dumps({"collections": [{"name": str(collection_tarball), "type": "file"}]}))
        collections = self.private_data_dir / "requirements_collections"
        subprocess.run([ansible_command("ansible-galaxy"), "collection", "install", "-r",
                        str(project / "collections" / "requirements.yml"), "-p", str(collections)],
                       env=execution_environment(), check=True, capture_output=True)

        state = fleet.state()
        hosts = {"_meta": {"hostvars": {host: {"ansible_host": state["hosts"][host]["address"]} for host in GROUPS}},
                 "all": {"vars": {"ansible_ssh_common_args": " ".join(SSH_OPTIONS),
                                  "ansible_python_interpreter": "/usr/bin/python3"}}}
        for host, group in GROUPS.items():
            hosts.setdefault(group, {"hosts": []})["hosts"].append(host)
        inventory = self.private_data_dir / "inventory" / "hosts"
        inventory.parent.mkdir()
        inventory.write_text("#!/usr/bin/env python3\nprint(%r)\n" % json.dumps(hosts))
        inventory.chmod(0o700)

        env = self.private_data_dir / "env"
        env.mkdir()
        (env / "extravars").write_text(json.dumps(extra_vars))
        (env / "ssh_key").write_text(open(fleet.key_file, encoding="utf-8").read())
        (env / "ssh_key").chmod(0o600)
        (env / "cmdline").write_text(f"-u root {cmdline}".strip())
        (env / "envvars").write_text(json.dumps({
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.fact_cache),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0",
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }))
        self.fact_cache.mkdir(parents=True)
        if facts_from is not None:
            for cached in facts_from.fact_cache.iterdir():
                shutil.copy2(cached, self.fact_cache / cached.name)
        return self

    def run(self):
        subprocess.run([ansible_command("ansible-runner"), "run", str(self.private_data_dir), "--ident", str(self.job_id),
                        "-p", "site.yml"], env=execution_environment(), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=900, check=False)
        return self

    @property
    def status(self):
        return (self.artifacts / "status").read_text()

    def events(self):
        for path in sorted((self.artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-")[0])):
            yield json.loads(path.read_text())

    def results(self, task):
        return {event["event_data"]["host"]: event["event_data"]["res"] for event in self.events()
                if event["event"] in ("runner_on_ok", "runner_on_failed") and event["event_data"].get("task") == task}

    def stats(self):
        (stats,) = [event["event_data"] for event in self.events() if event["event"] == "playbook_on_stats"]
        return stats

    def cached_checkpoint(self, host):
        # ansible-core 2.19's jsonfile cache names the file s<schema>_HOST and wraps the facts in __payload__.
        (path,) = [path for path in self.fact_cache.iterdir() if re.fullmatch(r"(s\d+_)?" + re.escape(host), path.name)]
        cached = json.loads(path.read_text())
        return json.loads(cached.get("__payload__", "null") or path.read_text())["opdbus_checkpoint"]

    def explain(self):
        return f"{self.private_data_dir}: {self.status}\n" + (self.artifacts / "stdout").read_text()[-4000:]


def host_checkpoint(fleet, host):
    return fleet.run_module(host, "opdbus.fleet.opdbus_ledger_info", {"limit": 0})["checkpoint"]


@pytest.fixture(scope="module")
def jobs(fleet, collection_tarball, tmp_path_factory):
    """Two rollouts, the survey asking for waves of one host, then every host."""
    root = tmp_path_factory.mktemp("awx")
    survey = {"opdbus_serial": "1,100%", "opdbus_max_fail_percentage": 0}
    first = Job(root, 1).lay_out(fleet, collection_tarball, survey).run()
    assert first.status == "successful", first.explain()
    fleet.ssh("node1", f"rm -rf {COPY} && cp -a {LEDGER} {COPY}")
    fleet.run_module("node1", "opdbus.fleet.opdbus_ledger_record", {"action": "test_note", "changes": {"note": "between jobs"}})
    second = Job(root, 2).lay_out(fleet, collection_tarball, survey, facts_from=first).run()
    return {"root": root, "first": first, "second": second}


def test_the_first_job_converges_and_keeps_each_checkpoint_as_a_cached_fact(fleet, jobs):
    first = jobs["first"]
    stats = first.stats()
    for host in GROUPS:
        assert stats["changed"].get(host, 0) > 0 and host not in stats["failures"], stats
        assert first.results(CHECKPOINT_TASK)[host]["stored_in"] is None  # first contact
    assert first.cached_checkpoint("node2") == host_checkpoint(fleet, "node2")


def test_the_second_job_holds_each_host_to_the_first_jobs_checkpoint(fleet, jobs):
    first, second = jobs["first"], jobs["second"]
    assert second.status == "successful", second.explain()
    stats = second.stats()
    checked = second.results(CHECKPOINT_TASK)
    for host in GROUPS:
        assert checked[host]["stored_in"] == "fact", checked[host]
        assert checked[host]["stored_checkpoint"] == first.cached_checkpoint(host)
        assert host not in stats["failures"], stats
    # node2 is unchanged since the first job; node1 has one entry more, proven consistent and stored.
    assert stats["changed"].get("node2", 0) == 0, stats
    assert checked["node1"]["changed"] and checked["node1"]["checkpoint"]["size"] == first.cached_checkpoint("node1")["size"] + 1
    assert second.cached_checkpoint("node1") == host_checkpoint(fleet, "node1")


def test_an_audit_job_fails_the_host_rolled_back_since_the_fact_cached_checkpoint(fleet, collection_tarball, jobs):
    root, second = jobs["root"], jobs["second"]
    held = second.cached_checkpoint("node1")
    fleet.ssh("node1", f"rm -rf {LEDGER} && cp -a {COPY} {LEDGER}")
    audit = Job(root, 3).lay_out(fleet, collection_tarball, {}, facts_from=second, cmdline="--tags checkpoint").run()
    assert audit.status == "failed"
    checked = audit.results(CHECKPOINT_TASK)
    assert checked["node1"]["problem"] == "anchor_truncated" and held["root"] in checked["node1"]["msg"]
    assert not checked["node2"].get("failed"), checked["node2"]
    assert audit.cached_checkpoint("node1") == held, "the failed host's cached checkpoint must be kept"
    assert set(audit.stats()["failures"]) == {"node1"}
