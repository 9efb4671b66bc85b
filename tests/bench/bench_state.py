# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: opdbus_state against the Ansible floor and a loop of ansible.builtin.systemd_service.

On one test-fleet host, with the same Ansible configuration (tests/ansible.cfg, pipelining on) for
every playbook, times end to end: a one-task ping playbook (the floor), opdbus_state, and a
systemd_service loop, over 10, 50 and 200 units, for the first apply and for idempotent runs.
Also reads the module's own time for a no-op check of 50 units. Prints times, ratios and whether
each target holds; exits 1 when one does not.

Run as root from the repository root: ``make bench`` (or this file with the venv's Python).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "fleet"))

from fleet import Fleet, ansible_command, ansible_environment  # noqa: E402  (path set up just above)

SIZES = (10, 50, 200)
REPEATS = 3
UNIT_DIR = "/usr/local/lib/systemd/system"
TARGETS = (  # (description, measured key, limit)
    ("opdbus_state idempotent run at 50 units <= 1.3x the floor", ("ratio", 50), 1.3),
    ("opdbus_state idempotent run at 200 units <= 1.5x the floor", ("ratio", 200), 1.5),
    ("module self-time, no-op check of 50 units < 50 ms", ("self_ms", 50), 50.0),
)

PING = """---
- name: Floor
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""
OPDBUS = """---
- name: opdbus_state
  hosts: all
  gather_facts: false
  vars_files: [units.json]
  tasks:
    - name: Apply the units
      opdbus.fleet.opdbus_state:
        state: {version: 1, plugins: {systemd: {units: "{{ desired }}"}}}
"""
SYSTEMD_LOOP = """---
- name: systemd_service loop
  hosts: all
  gather_facts: false
  vars_files: [units.json]
  tasks:
    - name: Start and enable each unit
      ansible.builtin.systemd_service:
        name: "{{ item }}"
        state: started
        enabled: true
      loop: "{{ desired | list }}"
"""


def unit_names(count):
    return [f"bench-{index:03d}.service" for index in range(1, count + 1)]


class Bench:
    def __init__(self, fleet, workdir):
        self.fleet = fleet
        self.workdir = workdir
        for name, text in (("ping.yml", PING), ("opdbus.yml", OPDBUS), ("systemd.yml", SYSTEMD_LOOP)):
            with open(os.path.join(workdir, name), "w") as handle:
                handle.write(text)

    def install_units(self, count):
        script = (f"mkdir -p {UNIT_DIR} && for i in $(seq -f %03g 1 {count}); do printf '[Service]\\n"
                  "ExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' "
                  f"> {UNIT_DIR}/bench-$i.service; done && systemctl daemon-reload")
        self.fleet.ssh("node1", script)

    def reset(self, count):
        self.fleet.ssh("node1", f"systemctl disable --now --quiet {' '.join(unit_names(count))}", timeout=300)

    def declare(self, count):
        with open(os.path.join(self.workdir, "units.json"), "w") as handle:
            json.dump({"desired": {name: {"active_state": "active", "enabled": True} for name in unit_names(count)}},
                      handle)

    def playbook(self, name):
        started = time.monotonic()
        result = subprocess.run([ansible_command("ansible-playbook"), "-i", self.fleet.inventory_file,
                                 os.path.join(self.workdir, name)],
                                env=ansible_environment(), capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
        return elapsed

    def median(self, name):
        return statistics.median([self.playbook(name) for _repeat in range(REPEATS)])

    def module_self_ms(self, count):
        """Median of the module's own timing for a no-op check-mode run over COUNT converged units."""
        arguments = {"state": {"version": 1, "plugins": {"systemd": {"units": {
            name: {"active_state": "active", "enabled": True} for name in unit_names(count)}}}}}
        samples = []
        for _sample in range(5):
            output = self.fleet.run_module("node1", "opdbus.fleet.opdbus_state", arguments, check_mode=True)
            if output.get("changed") or output.get("failed"):
                raise SystemExit(f"the no-op check was not a no-op: {str(output)[:2000]}")
            samples.append(output["timing"]["total_ms"])
        return statistics.median(samples)


def main():
    if os.geteuid() != 0:
        raise SystemExit("the benchmark boots a systemd-nspawn host and needs root")
    fleet = Fleet("bench")
    workdir = tempfile.mkdtemp(prefix="opdbus-bench-")
    rows = []
    measured = {}
    try:
        fleet.up(1)
        bench = Bench(fleet, workdir)
        bench.install_units(max(SIZES))
        floor = bench.median("ping.yml")
        rows.append(("ping (the floor)", "-", None, floor))
        for count in SIZES:
            bench.declare(count)
            bench.reset(count)
            opdbus_first = bench.playbook("opdbus.yml")
            opdbus_idle = bench.median("opdbus.yml")
            measured[("self_ms", count)] = bench.module_self_ms(count)
            bench.reset(count)
            loop_first = bench.playbook("systemd.yml")
            loop_idle = bench.playbook("systemd.yml")
            measured[("ratio", count)] = opdbus_idle / floor
            rows.append(("opdbus_state", count, opdbus_first, opdbus_idle, loop_idle))
            rows.append(("systemd_service loop", count, loop_first, loop_idle))
            bench.reset(count)
    finally:
        fleet.down(quiet=True)

    print("\nopdbus_state vs the floor and vs ansible.builtin.systemd_service (one host, pipelining on)")
    print(f"{'playbook':<22}{'units':>6}{'first apply':>13}{'idempotent':>12}{'x floor':>9}{'x loop':>9}")
    for row in rows:
        name, count, first, idle = row[:4]
        versus_loop = f"{idle / row[4]:.3f}" if len(row) > 4 else "-"
        first_text = f"{first:.2f} s" if first is not None else "-"
        print(f"{name:<22}{count!s:>6}{first_text:>13}{idle:>10.2f} s{idle / floor:>9.2f}{versus_loop:>9}")
    print("module self-time, no-op check: "
          + ", ".join(f"{count} units {measured[('self_ms', count)]:.1f} ms" for count in SIZES))
    failed = False
    for description, key, limit in TARGETS:
        value = measured[key]
        verdict = "PASS" if value <= limit else "FAIL"
        failed = failed or verdict == "FAIL"
        print(f"{verdict}  {description}: {value:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
