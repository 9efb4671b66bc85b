# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs on a test host: real opdbus_state runs killed at random points, and concurrent conflicting runs.

The module runs exactly as Ansible ships it: an AnsiballZ wrapper that Ansible left on the host
(ANSIBLE_KEEP_REMOTE_FILES), exploded once and executed with arguments this script writes. The
ledger is read with the collection's own code from the exploded payload. Prints one JSON summary.

    python3 recorded_runs.py WRAPPER kill COUNT     # COUNT runs SIGKILLed while still running
    python3 recorded_runs.py WRAPPER concurrent N   # N conflicting applies started at once
"""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

WORK = "/var/lib/opdbus-recorded-runs"
LEDGER = os.path.join(WORK, "ledger")
UNIT_DIR = "/usr/local/lib/systemd/system"
UNITS = ["recorded-run-%02d.service" % number for number in range(1, 7)]


def setup_units():
    os.makedirs(UNIT_DIR, exist_ok=True)
    for name in UNITS:
        with open(os.path.join(UNIT_DIR, name), "w") as handle:
            handle.write("[Unit]\nDescription=recorded run test unit\n[Service]\nExecStart=/bin/sleep infinity\n"
                         "[Install]\nWantedBy=multi-user.target\n")
    quiet("systemctl", "daemon-reload")
    quiet("systemctl", "disable", "--now", *UNITS)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)


def quiet(*argv):
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def explode(wrapper, directory):
    """A copy of the AnsiballZ wrapper in DIRECTORY, exploded; returns (copy, args path, debug dir)."""
    os.makedirs(directory, exist_ok=True)
    copy = os.path.join(directory, os.path.basename(wrapper))
    shutil.copy(wrapper, copy)
    subprocess.run([sys.executable, copy, "explode"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    debug_dir = os.path.join(directory, "debug_dir")
    return copy, os.path.join(debug_dir, "args"), debug_dir


def write_args(args_path, document):
    with open(args_path) as handle:
        params = json.load(handle)
    module_args = params["ANSIBLE_MODULE_ARGS"]
    module_args.update(state=document, ledger_path=LEDGER, state_file=os.path.join(WORK, "state.json"),
                       _ansible_check_mode=False)
    with open(args_path, "w") as handle:
        json.dump(params, handle)


def document(pattern):
    """A document declaring each unit active+enabled ("1") or inactive+disabled ("0")."""
    return {"version": 1, "plugins": {"systemd": {"units": {
        name: {"active_state": "active", "enabled": True} if flag == "1" else {"active_state": "inactive", "enabled": False}
        for name, flag in zip(UNITS, pattern)}}}}


def ledger_entries():
    """Every complete line of ledger.jsonl (crash residue included, as the next append adopts it)."""
    try:
        with open(os.path.join(LEDGER, "ledger.jsonl"), "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def live_snapshot(modules):
    """The units as they are, in the collection's own terms (UnitStatus.snapshot)."""
    output = subprocess.run(["systemctl", "show", "-p", "Id,LoadState,ActiveState,SubState,UnitFileState", *UNITS],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True).stdout
    units = {}
    for block in output.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines())
        status = modules.UnitStatus(fields["Id"], fields["LoadState"], fields["ActiveState"], fields["SubState"], "",
                                    fields["UnitFileState"])
        units[status.name] = status.snapshot()
    return units


def recorded_state(entries, blobs):
    """The unit states the ledger says the host is in, or None when the last run may have changed more.

    Every change is preceded by an intent, so if the newest intent has a complete outcome, the
    host must be exactly in the state that outcome's restore point (blob) records.
    """
    last_intent = max((entry["seq"] for entry in entries if entry["action"] == "intent"), default=None)
    if last_intent is None:
        return None
    outcome = next((entry for entry in entries if entry["action"] == "apply"
                    and entry["changes"].get("intent") == last_intent), None)
    if outcome is None or "error" in outcome["changes"] or outcome["state_sha256"] is None:
        return None
    return blobs.get(outcome["state_sha256"])["plugins"]["systemd"]["units"]


class Collection:
    """The collection's module_utils, imported from the exploded AnsiballZ payload."""

    def __init__(self, debug_dir):
        sys.path.insert(0, debug_dir)
        from ansible_collections.opdbus.fleet.plugins.module_utils._ledger import blobs, store
        from ansible_collections.opdbus.fleet.plugins.module_utils._systemd import units

        self.Ledger = store.Ledger
        self.BlobStore = blobs.BlobStore
        self.UnitStatus = units.UnitStatus


def kill_runs(wrapper, wanted):
    copy, args_path, debug_dir = explode(wrapper, os.path.join(WORK, "killer"))
    modules = Collection(debug_dir)
    blobs = modules.BlobStore(LEDGER)
    rng = random.Random(int(os.environ.get("RECORDED_RUNS_SEED", "6962")))
    # Kill points are drawn over the time an unkilled run takes on this host, so that as many runs are
    # killed on a fast host as on a slow one.
    write_args(args_path, document("000000"))
    started = time.monotonic()
    subprocess.run([sys.executable, copy, "execute"], stdin=subprocess.DEVNULL, capture_output=True, check=False)
    run_seconds = time.monotonic() - started
    killed = runs = 0
    interrupted_seen = []
    violations = []
    while killed < wanted and runs < wanted * 4:
        runs += 1
        write_args(args_path, document("111111" if runs % 2 else "000000"))
        process = subprocess.Popen([sys.executable, copy, "execute"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.95 * run_seconds))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait()
        entries = ledger_entries()
        # A run killed before it closed the run it found interrupted leaves the same intent last.
        if entries and entries[-1]["action"] == "intent" and entries[-1]["seq"] not in interrupted_seen:
            interrupted_seen.append(entries[-1]["seq"])
        expected = recorded_state(entries, blobs)
        if expected is not None:
            actual = live_snapshot(modules)
            if actual != expected:
                violations.append({"run": runs, "expected": expected, "actual": actual, "last": entries[-1]})
    # One more run that is not killed closes the last interrupted run, if any.
    write_args(args_path, document("101010"))
    final = subprocess.run([sys.executable, copy, "execute"], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, check=False)
    verification = modules.Ledger(LEDGER).verify()
    return {"runs": runs, "killed": killed, "interrupted_seen": interrupted_seen, "violations": violations,
            "final": json.loads(final.stdout), "verify": verification,
            "expected_after_final": recorded_state(ledger_entries(), blobs), "live_after_final": live_snapshot(modules)}


def concurrent_runs(wrapper, count):
    patterns = ["111111", "000000", "110011", "001100", "101010", "010101"][:count]
    runners = []
    for index, pattern in enumerate(patterns):
        copy, args_path, debug_dir = explode(wrapper, os.path.join(WORK, "runner%d" % index))
        write_args(args_path, document(pattern))
        runners.append(copy)
    modules = Collection(debug_dir)
    processes = [subprocess.Popen([sys.executable, copy, "execute"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for copy in runners]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append({"rc": process.returncode, "result": json.loads(out) if out.strip() else None, "stderr": err})
    return {"results": results, "entries": ledger_entries(), "verify": modules.Ledger(LEDGER).verify(),
            "live": live_snapshot(modules)}


def main():
    wrapper, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wrapper = sorted(glob.glob(wrapper))[-1]
    setup_units()
    summary = kill_runs(wrapper, count) if mode == "kill" else concurrent_runs(wrapper, count)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
