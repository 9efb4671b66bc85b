# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: `ansible-playbook opdbus.fleet.site` on 1 host and on 10 hosts (forks 10).

Ten test-fleet hosts, all in the `laptops` group so that both runs execute the same plays, converge
once; then the idempotent rollout (the steady state of a fleet: profile, ledger check, checkpoint
stored in an anchor directory) is timed on one host (--limit) and on all ten, three times each.
Prints the wall times, their ratio against the goal of 2x, and the controller's CPU time per host
(user + system of ansible-playbook, its workers and their ssh clients). Exits 1 when the goal fails.

The hosts run on this machine too, so the ten-host run shares its cores with ten hosts' worth of
module work; on a real fleet only the controller's share stays here.

Run as root from the repository root: ``make bench`` (or this file with the venv's Python).
"""

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "fleet"))

from fleet import Fleet, ansible_command, ansible_environment  # noqa: E402  (path set up just above)

HOSTS = 10
FORKS = 10
REPEATS = 3
GOAL = 2.0


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds():
    """CPU seconds this machine spent busy so far, all cores: the controller and the hosts on it."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class SiteRun:
    def __init__(self, fleet, workdir):
        self.groups = os.path.join(workdir, "groups.yml")
        with open(self.groups, "w") as handle:
            json.dump({"laptops": {"hosts": {f"node{index}": None for index in range(1, HOSTS + 1)}}}, handle)
        self.argv = [ansible_command("ansible-playbook"), "-i", fleet.inventory_file, "-i", self.groups,
                     "--forks", str(FORKS), "-e", f"opdbus_anchor_dir={os.path.join(workdir, 'checkpoints')}",
                     "opdbus.fleet.site"]

    def once(self, *extra):
        """(wall seconds, controller CPU seconds, machine busy CPU seconds, output) of one rollout."""
        cpu_before, busy_before, started = children_cpu_seconds(), machine_busy_seconds(), time.monotonic()
        result = subprocess.run(self.argv + list(extra), env=ansible_environment(), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, check=False)
        wall, cpu = time.monotonic() - started, children_cpu_seconds() - cpu_before
        busy = machine_busy_seconds() - busy_before
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(self.argv + list(extra))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
        return wall, cpu, busy, result.stdout

    def median(self, *extra):
        """Medians of (wall, controller CPU, machine busy) over REPEATS idempotent rollouts."""
        runs = []
        for _repeat in range(REPEATS):
            *measured, output = self.once(*extra)
            recap = output.split("PLAY RECAP")[-1]
            if re.search(r"changed=[1-9]", recap):
                raise SystemExit(f"an idempotent rollout changed something:\n{recap}")
            runs.append(measured)
        return tuple(statistics.median(column) for column in zip(*runs))


def main():
    if os.geteuid() != 0:
        raise SystemExit("the benchmark boots systemd-nspawn hosts and needs root")
    fleet = Fleet("bsite")
    workdir = tempfile.mkdtemp(prefix="opdbus-bench-site-")
    try:
        started = time.monotonic()
        fleet.up(HOSTS)
        boot = time.monotonic() - started
        site = SiteRun(fleet, workdir)
        first = site.once()[:3]
        one = site.median("--limit", "node1")
        ten = site.median()
    finally:
        fleet.down(quiet=True)
        shutil.rmtree(workdir, ignore_errors=True)

    cores = os.cpu_count()
    ratio = ten[0] / one[0]
    print(f"\nopdbus.fleet.site, idempotent rollout (laptop profile, ledger check, checkpoint stored); "
          f"{HOSTS} hosts booted in {boot:.0f} s, forks {FORKS}, median of {REPEATS}, {cores} cores")
    print(f"{'run':<24}{'wall':>9}{'controller CPU':>16}{'per host':>10}{'machine busy':>14}{'of the cores':>14}")
    for name, hosts, (wall, cpu, busy) in (("first rollout, 10 hosts", HOSTS, first), ("1 host", 1, one),
                                           ("10 hosts", HOSTS, ten)):
        print(f"{name:<24}{wall:>7.1f} s{cpu:>14.1f} s{cpu / hosts:>8.2f} s{busy:>12.1f} s{busy / (wall * cores):>13.0%}")
    print("controller CPU: ansible-playbook, its workers and their ssh clients; machine busy adds the hosts' own work,"
          " which a real fleet does elsewhere")
    print(f"the 10-host run kept {ten[2] / (ten[0] * cores):.0%} of the {cores} cores busy: its wall time is the machine's "
          f"busy CPU over its cores ({ten[2] / cores:.1f} s), {(ten[2] - ten[1]) / HOSTS:.1f} s of it per host on the hosts' side")
    verdict = "PASS" if ratio <= GOAL else "FAIL"
    print(f"{verdict}  10 hosts <= {GOAL:.0f}x the 1-host wall time: {ratio:.2f}x")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
