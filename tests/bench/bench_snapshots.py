# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: snapshot storage and the module time of taking a snapshot and pruning a long history.

On one test-fleet host with 100 units: reads their live state with opdbus_state_info, builds a
history of 1000 snapshots of that unchanged state with the collection's own snapshot code (here,
which is the same code the module runs, serving the state read from the host; 1000 module runs
over SSH would take minutes), measures its size on disk, copies it to the host, then runs
opdbus_snapshot there to take one more snapshot and to prune the history (which verifies the
ledger first), and opdbus_ledger_info to verify it and every restore point's blob, reading the
modules' own timing. Prints results against the targets and exits 1 when one does not hold.
"""

import base64
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "fleet"))
sys.path.insert(0, os.path.join(REPO, "build"))

from fleet import Fleet  # noqa: E402  (paths set up just above)
from ansible_collections.opdbus.fleet.plugins.module_utils._state.apply import StateApplier  # noqa: E402
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshots import SnapshotManager  # noqa: E402
from ansible_collections.opdbus.fleet.plugins.module_utils._systemd.units import UnitStatus  # noqa: E402

UNITS = 100
HISTORY = 1000
HOST_LEDGER = "/var/tmp/opdbus-bench-snapshots"
UNIT_DIR = "/usr/local/lib/systemd/system"


class HostUnits:
    """The units' state as read from the host, served the way SystemdClient.read_units serves it."""

    def __init__(self, units):
        self.units = units

    def read_units(self, names):
        return {name: self.units[name] for name in names}


def module_result(fleet, module, arguments):
    output = fleet.run_module("node1", module, arguments)
    if output.get("failed"):
        raise SystemExit(f"{module} failed: {output.get('msg')}")
    return output


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _dirs, files in os.walk(path) for name in files)


def main():
    if os.geteuid() != 0:
        raise SystemExit("the benchmark boots a systemd-nspawn host and needs root")
    fleet = Fleet("benchsnp")
    names = [f"snap-{index:03d}.service" for index in range(1, UNITS + 1)]
    results = {}
    try:
        fleet.up(1)
        fleet.ssh("node1", f"mkdir -p {UNIT_DIR} && for i in $(seq -f %03g 1 {UNITS}); do printf '[Service]\\n"
                  f"ExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > {UNIT_DIR}/snap-$i.service;"
                  " done && systemctl daemon-reload")
        live = module_result(fleet, "opdbus.fleet.opdbus_state_info", {"units": names})["units"]
        units = {name: UnitStatus(name, state["load_state"], state["active_state"], state["sub_state"], "",
                                  state["unit_file_state"]) for name, state in live.items()}
        with tempfile.TemporaryDirectory(prefix="opdbus-bench-") as workdir:
            ledger_dir = os.path.join(workdir, "blockchain")
            manager = SnapshotManager(StateApplier(HostUnits(units), ledger_dir))
            for _snapshot in range(HISTORY):
                manager.take(names)
            results["bytes"] = directory_bytes(ledger_dir)
            archive = subprocess.run(["tar", "-C", workdir, "-c", "blockchain"], capture_output=True, check=True).stdout
        fleet.ssh("node1", f"rm -rf {HOST_LEDGER} && mkdir -p {HOST_LEDGER} && base64 -d "
                  f"| tar -C {HOST_LEDGER} -x --strip-components=1", input=base64.b64encode(archive).decode("ascii"))
        taken = module_result(fleet, "opdbus.fleet.opdbus_snapshot", {"ledger_path": HOST_LEDGER, "units": names})
        results["take_ms"] = taken["timing"]["total_ms"]
        pruned = module_result(fleet, "opdbus.fleet.opdbus_snapshot",
                               {"ledger_path": HOST_LEDGER, "state": "pruned", "retention": {"hourly": 24, "daily": 7}})
        results["prune_ms"] = pruned["timing"]["total_ms"]
        results["pruned"] = len(pruned["removed"])
        started = time.monotonic()
        verified = module_result(fleet, "opdbus.fleet.opdbus_ledger_info", {"path": HOST_LEDGER, "limit": 0})
        results["verify_s"] = time.monotonic() - started
        results["valid_after_prune"] = verified["valid"]
    finally:
        fleet.down(quiet=True)

    print(f"\n{HISTORY} snapshots of an unchanged {UNITS}-unit state: {results['bytes'] / 1024:.0f} KiB on disk "
          f"(ledger entries and one shared blob)")
    print(f"opdbus_snapshot module time: take one with {HISTORY} in the history {results['take_ms']:.0f} ms; "
          f"prune {HISTORY + 1} ({results['pruned']} removed) {results['prune_ms']:.0f} ms; "
          f"ledger and restore points valid after pruning: {results['valid_after_prune']} "
          f"(opdbus_ledger_info task {results['verify_s']:.2f} s)")
    checks = [
        (f"{HISTORY} snapshots take <= 1 MiB", results["bytes"] <= 1024 * 1024, f"{results['bytes'] / 1048576:.2f} MiB"),
        ("taking one snapshot < 1 s of module time", results["take_ms"] < 1000, f"{results['take_ms'] / 1000:.3f} s"),
        (f"pruning a {HISTORY}-snapshot history < 1 s of module time", results["prune_ms"] < 1000,
         f"{results['prune_ms'] / 1000:.3f} s"),
        ("the ledger and every restore point's blob verify after pruning", results["valid_after_prune"],
         str(results["valid_after_prune"])),
    ]
    for description, passed, value in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {description}: {value}")
    return 0 if all(passed for _description, passed, _value in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
