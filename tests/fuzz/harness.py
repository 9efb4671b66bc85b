# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fuzz test: >= 10,000 generated bad inputs through every module, on a real systemd host.

Usage (as root; ``make fuzz`` runs it)::

    python tests/fuzz/harness.py [--cases 10400] [--seed N] [--module opdbus_state ...] [--report FILE]

It boots one test host (tests/fleet/fleet.py, fleet name from OPDBUS_FLEET_NAME, default
``fuzz``, with a BTRFS mount), copies tests/fuzz/runner.py, the collection's plugins and
ansible-core's module_utils into it, and starts the runner there. Hypothesis generates the cases
(tests/fuzz/strategies.py); the runner runs each module's ``main()`` in-process against the host's
systemd and answers with the result and what changed on the host. Every case must end with a JSON
result (``failed`` with a ``msg``, or success), never an exception; where a case was refused
(``failed`` and not ``changed``), nothing may have changed; a read-only run (an info module, check
mode) changes nothing whatever its outcome; and no case may touch the canary files or, for
opdbus_snapshot, a subvolume outside a snapshot directory. The counts per module and per input
kind are printed; the run fails when a case fails any of this or fewer than 10,000 cases ran.

Failures are grouped by signature (the exception and where it was raised, or the kind of change),
each with its smallest example (module, parameters, files) to reproduce it; the whole report is
also written as JSON. The fleet is torn down at the end, also when interrupted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "fleet"))
sys.path.insert(0, HERE)
if os.path.join(REPO, "build") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "build"))

import strategies  # noqa: E402  (tests/fuzz, put on the path just above)
from fleet import Fleet, FleetError  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings  # noqa: E402

MIN_CASES = 10_000
# Cases per module, as shares of --cases: the read-only modules cost least per case; btrfs-progs runs
# several commands per BTRFS case (50-100 ms), so those modules get fewer, still hundreds.
SHARES = {
    "opdbus_state": 13, "opdbus_state_info": 13, "opdbus_ledger_info": 24, "opdbus_snapshot": 11,
    "opdbus_numa": 11, "opdbus_numa_info": 22, "btrfs_subvolume": 3, "btrfs_info": 3,
}
PAYLOAD_DIR = "/opt/opdbus-fuzz"
RESET_EVERY = 1000  # cases (per host) between resets of the test units and the BTRFS layout to their baseline
CASE_TIMEOUT = 60  # the runner stops a module after 10 s; this only catches a runner that hangs
# Once a module has hung this often at one place, a later case still running there after 1 s is
# stopped as a hang of its own (counted, not waited out).
HANGS_BEFORE_SHORT_TIMEOUT = 2
SNAPSHOT_DIR_NAME = "@snapshots"


# ---------------------------------------------------------------------------------------- the host side

def payload(plugins):
    """A tar of what the runner needs in the host: itself, the collection's PLUGINS, ansible-core's module_utils."""
    import ansible
    from ansible_collections.opdbus.fleet.tests.unit.fixtures.numa import sysfs

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add_tree(source, target):
            tar.add(source, arcname=target, filter=lambda info: None if "__pycache__" in info.name else info)

        tar.add(os.path.join(HERE, "runner.py"), arcname="runner.py")
        empty = tarfile.TarInfo("lib/ansible/__init__.py")
        tar.addfile(empty, io.BytesIO(b""))
        add_tree(os.path.join(os.path.dirname(ansible.__file__), "module_utils"), "lib/ansible/module_utils")
        add_tree(plugins, "lib/ansible_collections/opdbus/fleet/plugins")
        trees = {"laptop": sysfs.laptop(), "workstation": sysfs.workstation(), "dgx": sysfs.dgx(), "vm": sysfs.vm(),
                 "without_numa": sysfs.without_numa(sysfs.workstation())}
        data = json.dumps({name: tree.to_json() for name, tree in trees.items()}).encode()
        info = tarfile.TarInfo("sysfs.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), {name: sorted(tree.files) for name, tree in trees.items()}


def leader_pid(fleet, host):
    """PID 1 of the host (the child of its systemd-nspawn), for nsenter."""
    nspawn = fleet.hosts()[host]["pid"]
    for task in os.listdir(f"/proc/{nspawn}/task"):
        with open(f"/proc/{nspawn}/task/{task}/children", encoding="ascii") as handle:
            children = handle.read().split()
        if children:
            return int(children[0])
    raise FleetError(f"{host}: systemd-nspawn {nspawn} has no child process")


class Runner:
    """The runner process inside the host, spoken to in JSON lines."""

    def __init__(self, host, leader, tar, log_path):
        enter = self.enter = ["nsenter", "-t", str(leader), "-a", "--"]
        subprocess.run(enter + ["/bin/sh", "-c", f"rm -rf {PAYLOAD_DIR} && mkdir -p {PAYLOAD_DIR} && "
                                                 f"tar -x -C {PAYLOAD_DIR}"], input=tar, check=True)
        self.host = host
        self.log = open(log_path, "wb")  # noqa: SIM115 -- open for the life of the runner
        self.process = subprocess.Popen(
            enter + ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
                     "/usr/bin/python3", "-u", f"{PAYLOAD_DIR}/runner.py"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.log_path = log_path
        self.buffer = b""

    def send(self, message):
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise FleetError(f"the runner in the host exited; see {self.log_path}") from None

    def receive(self, timeout=CASE_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _w, _x = select.select([self.process.stdout], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(self.process.stdout.fileno(), 1 << 16) if ready else b""
            if not chunk:
                what = "exited" if ready else f"gave no answer within {timeout} s"
                raise FleetError(f"the runner in the host {what}; see {self.log_path}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "runner_error" in answer:
            raise FleetError(f"the runner failed (a harness bug, not a module bug):\n{answer['runner_error']}")
        return answer

    def request(self, message, timeout=CASE_TIMEOUT):
        self.send(message)
        return self.receive(timeout)

    def diagnose(self):
        """After a failure: the host's recent journal and failed units, into the runner's log."""
        result = subprocess.run(self.enter + ["/bin/sh", "-c", "journalctl --no-pager -n 60; systemctl --failed"],
                                stdin=subprocess.DEVNULL, capture_output=True, check=False)
        self.log.write(b"\n==== journal of " + self.host.encode() + b"\n" + result.stdout + result.stderr)
        self.log.flush()
        print(f"fuzz: the journal of {self.host} is in {self.log_path}", file=sys.stderr)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------- verdicts

CHANGE_KINDS = ("changed on refusal", "changed in check mode", "changed in a read-only run", "collateral damage")


def verdict(case, answer):
    """``(outcome, problems)``: outcome is accepted, refused, refused-argspec or uncaught; problems are
    ``(kind, detail)`` of the assertions the case broke."""
    module = case["module"]
    result = answer.get("result")
    problems = []
    if answer["end"] != "exit" or not isinstance(result, dict):
        what = {"exception": "uncaught exception", "timeout": "hang", "returned": "main() returned without a result",
                "exit": "no JSON result"}[answer["end"]]
        detail = answer.get("traceback") or f"stdout: {answer.get('stdout', '')!r} stderr: {answer.get('stderr', '')!r}"
        return "uncaught", [(what, detail)]
    failed = bool(result.get("failed"))
    if failed and not (isinstance(result.get("msg"), str) and result["msg"].strip()):
        problems.append(("failed without a message", json.dumps(result, default=repr)[:2000]))
    if failed and "Traceback (most recent call last)" in str(result.get("msg", "")):
        problems.append(("traceback in the message", result["msg"][:2000]))
    outcome = "accepted" if not failed else ("refused" if answer["argspec_passed"] else "refused-argspec")
    changes = answer["changes"]
    collateral = [line for line in changes if line.startswith("canaries:") or _case_canary(line)]
    if module == "opdbus_snapshot":
        collateral += [line for line in changes if _outside_snapshot_dirs(line, case)]
    if collateral:
        problems.append(("collateral damage", "\n".join(collateral)))
    read_only = module in strategies.READ_ONLY_MODULES or case["check_mode"]
    if changes and read_only:
        problems.append(("changed in a read-only run" if not case["check_mode"] else "changed in check mode",
                         "\n".join(changes)))
    elif changes and failed and not result.get("changed"):
        # A run that failed after its intent records the attempt (intent, outcome with the error, the
        # state blob): that is the ledger doing its job, not a refusal that changed something. Any
        # other change is still a violation.
        recorded = bool(result.get("recorded"))
        unexplained = [line for line in changes if not (recorded and _ledger_record(line))]
        if unexplained:
            problems.append(("changed on refusal", "\n".join(unexplained)))
    return outcome, problems


def _ledger_record(line):
    """Whether a change line is to a case ledger's own files (entries, head, state blobs)."""
    if not line.startswith("case dir: "):
        return False
    path = line[len("case dir: "):].split(": ", 1)[0]
    return bool(re.fullmatch(r"[^/]+/(ledger\.jsonl|head\.json|snapshots/[0-9a-f]{64}\.json\.zst)", path))


def _case_canary(line):
    return line.startswith("case dir: ") and line.split(": ")[1] in ("canary", "victim.json.zst", "ledger-victim")


def _outside_snapshot_dirs(line, case):
    """A change to an existing entry of the BTRFS mount outside a snapshot directory (opdbus_snapshot may
    create and delete there, nowhere else)."""
    prefix = f"{strategies.BTRFS}: "
    if not line.startswith(prefix):
        return False
    path, change = line[len(prefix):].split(": ", 1)
    if change.startswith("absent ->"):
        return False  # created: snapshots go where btrfs_snapshot_dir says
    target = case["params"].get("btrfs_snapshot_dir")
    inside = path.split("/")[0] == SNAPSHOT_DIR_NAME or "/" + SNAPSHOT_DIR_NAME + "/" in "/" + path + "/"
    if isinstance(target, str) and target.startswith(strategies.BTRFS + "/"):
        relative = target[len(strategies.BTRFS) + 1:].rstrip("/")
        inside = inside or path == relative or path.startswith(relative + "/")
    return not inside


def signature(module, kind, detail):
    """What makes two failures the same bug: the exception and the frame it came from (for a hang, the
    collection's frame that was running), or the kind of change."""
    if kind in ("uncaught exception", "hang"):
        lines = [line for line in detail.strip().splitlines() if line.strip()]
        frames = [frame for frame in re.findall(r'File "([^"]+)", line (\d+), in (\S+)', detail)
                  if "/runner.py" not in frame[0]]
        ours = [frame for frame in frames if "/ansible_collections/" in frame[0]]
        chosen = (ours if kind == "hang" and ours else frames)[-1:] or [("?", "?", "?")]
        where = f"{os.path.basename(chosen[0][0])}:{chosen[0][1]} in {chosen[0][2]}"
        if kind == "hang":
            return f"{module}: hang at {where}"
        return f"{module}: {kind}: {lines[-1][:160] if lines else '?'} at {where}"
    if kind in CHANGE_KINDS:
        # "SECTION: PATH: OLD -> NEW" lines: the same paths changed the same way are the same bug.
        changed = []
        for line in detail.splitlines()[:6]:
            section, _sep, rest = line.partition(": ")
            key, _sep, change = rest.partition(": ")
            old, _arrow, new = change.partition(" -> ")
            how = "created" if old == "absent" else "removed" if new.startswith("absent") else "changed"
            key = re.sub(r'[0-9a-f]{64}', '<digest>', re.sub(r'case-[0-9]+', 'case-N', key))
            changed.append(f"{section}: {key} {how}")
        return f"{module}: {kind}: {'; '.join(changed)[:200]}"
    first = detail.splitlines()[0] if detail else ""
    return f"{module}: {kind}: {first[:160]}"


# ---------------------------------------------------------------------------------------- counting

class Tally:
    def __init__(self):
        self.by_module = collections.defaultdict(collections.Counter)
        self.by_kind = collections.defaultdict(collections.Counter)
        self.failures = {}  # signature: {"count", "examples": [...]}
        self.total = 0
        self.slowest = []
        self.timing = collections.defaultdict(lambda: [0.0] * 4)
        self.events = collections.Counter()
        self.hangs = collections.defaultdict(collections.Counter)  # module: {collection frame: hangs}

    def add(self, case, answer, outcome, problems):
        self.total += 1
        for counter in (self.by_module[case["module"]], self.by_kind[f"{case['module']}/{case['kind']}"]):
            counter["cases"] += 1
            counter["domain"] += bool(answer.get("argspec_passed"))
            counter["host_ms"] += round(1000 * sum(answer.get("timing", ())))
            counter[outcome] += 1
            for kind, _detail in problems:
                counter["uncaught" if outcome == "uncaught" else "violations"] += 1
                counter[kind] += 1
        for kind, detail in problems:
            if kind == "hang" and answer.get("hung_at"):
                self.hangs[case["module"]][answer["hung_at"]] += 1
            key = signature(case["module"], kind, detail)
            record = self.failures.setdefault(key, {"count": 0, "examples": []})
            record["count"] += 1
            example = {"module": case["module"], "kind": case["kind"], "check_mode": case["check_mode"],
                       "params": answer.get("params", case["params"]), "setup": case["setup"], "detail": detail,
                       "result": _short(answer.get("result"))}
            record["examples"].append(example)
            record["examples"].sort(key=lambda item: len(json.dumps(item, default=repr)))
            del record["examples"][3:]
        for event in answer.get("runner_events", ()):
            self.events[event] += 1
        timing = self.timing[case["module"]]
        for index, seconds in enumerate(answer.get("timing", [])):
            timing[index] += seconds
        self.slowest.append((answer.get("seconds", 0), case["module"], case["kind"],
                             json.dumps(case["params"], default=repr)[:300]))
        self.slowest = sorted(self.slowest, reverse=True)[:5]

    def uncaught(self):
        return sum(counter["uncaught"] for counter in self.by_module.values())

    def violations(self):
        return sum(counter["violations"] for counter in self.by_module.values())

    def print(self, out, elapsed, seed_value):
        columns = ("cases", "domain", "accepted", "refused", "refused-argspec", "uncaught", "violations")
        header = "%-30s" % "module" + "".join("%16s" % column for column in columns) + "%10s" % "ms/case"
        out.write("\nfuzz: per module (domain = reached the module's own code past argument-spec validation; "
                  "refused = failed there; refused-argspec = failed argument-spec validation; ms/case = time in the "
                  "host)\n" + header + "\n")
        for module in sorted(self.by_module):
            counter = self.by_module[module]
            out.write("%-30s" % module + "".join("%16d" % counter[column] for column in columns)
                      + "%10.1f" % (counter["host_ms"] / max(counter["cases"], 1)) + "\n")
        out.write("\nfuzz: per input kind\n" + header.replace("module" + " " * 24, "module/kind".ljust(30)) + "\n")
        for kind in sorted(self.by_kind):
            counter = self.by_kind[kind]
            out.write("%-30s" % kind + "".join("%16d" % counter[column] for column in columns)
                      + "%10.1f" % (counter["host_ms"] / max(counter["cases"], 1)) + "\n")
        for key, record in sorted(self.failures.items()):
            example = record["examples"][0]
            out.write(f"\nFAIL ({record['count']}x) {key}\n")
            out.write(f"  module: {example['module']}  kind: {example['kind']}  check_mode: {example['check_mode']}\n")
            out.write(f"  params: {json.dumps(example['params'], default=repr)[:1500]}\n")
            setup = {name: value for name, value in example["setup"].items() if value}
            if setup:
                out.write(f"  setup: {json.dumps(setup, default=repr)[:1500]}\n")
            if example["result"]:
                out.write(f"  result: {json.dumps(example['result'], default=repr)[:800]}\n")
            detail = example["detail"].strip()
            if "Traceback (most recent call last)" in detail and len(detail) > 3000:
                detail = "..." + detail[-3000:]  # the frames nearest the error say most
            out.write("  " + detail[:4000].replace("\n", "\n  ") + "\n")
        out.write("\nfuzz: milliseconds per case in the host: set up, fingerprint, module, fingerprint and clean up\n")
        for module in sorted(self.timing):
            cases = max(self.by_module[module]["cases"], 1)
            out.write("%-30s" % module + "".join("%10.1f" % (1000 * seconds / cases) for seconds in self.timing[module])
                      + "\n")
        for event, count in sorted(self.events.items()):
            out.write(f"fuzz: runner event ({count}x): {event}\n")
        out.write("\nfuzz: slowest cases (module time):\n")
        for seconds, module, kind, params in self.slowest:
            out.write(f"  {seconds:.2f} s {module}/{kind}: {params}\n")
        out.write(f"fuzz: {self.total} cases, {self.uncaught()} uncaught, {self.violations()} changed-on-refusal or "
                  f"other violations, {len(self.failures)} distinct failures (seed {seed_value}, {elapsed:.0f} s)\n")


def _short(result):
    if not isinstance(result, dict):
        return result
    return {key: result[key] for key in ("failed", "changed", "msg") if key in result}


# ---------------------------------------------------------------------------------------- driving

class Fuzz:
    """Feeds generated cases to the runners, one case in flight per host, and judges the answers.

    The host works on a case while Hypothesis draws the next one, and the hosts work side by side:
    a case is judged when its host is needed again (or at the end), not as soon as it was sent.
    """

    def __init__(self, runners, ctx, tally, trace=None):
        self.fatal = None
        self.trace = trace
        self.runners = runners
        self.ctx = ctx
        self.tally = tally
        self.in_flight = collections.deque()  # (runner, case), oldest first
        self.since_reset = {runner: 0 for runner in runners}

    def run_case(self, case):
        if self.fatal:
            return  # the runner is gone: let Hypothesis finish quickly, then report
        try:
            self._run_case(case)
        except FleetError as error:
            self.fatal = error

    def _run_case(self, case):
        busy = {runner for runner, _case in self.in_flight}
        idle = [runner for runner in self.runners if runner not in busy]
        runner = idle[0] if idle else self.collect_oldest()
        message = {"op": "case", **case}
        known = [where for where, count in self.tally.hangs[case["module"]].items() if count >= HANGS_BEFORE_SHORT_TIMEOUT]
        if known:
            message["known_hangs"] = known
        runner.send(message)
        self.in_flight.append((runner, case))

    def collect_oldest(self):
        runner, case = self.in_flight.popleft()
        answer = runner.receive()
        outcome, problems = verdict(case, answer)
        self.tally.add(case, answer, outcome, problems)
        if self.trace:
            self.trace.write(json.dumps({"host": runner.host, "case": case, "outcome": outcome, "answer": answer,
                                         "problems": problems}, default=repr) + "\n")
        self.since_reset[runner] += 1
        if self.since_reset[runner] >= RESET_EVERY:
            self.reset(runner)
        return runner

    def drain(self):
        while self.in_flight:
            self.collect_oldest()

    def reset(self, runner):
        runner.request({"op": "reset"}, timeout=300)
        self.since_reset[runner] = 0

    def module(self, name, count, seed_value):
        strategy = strategies.MODULES[name](self.ctx)

        @seed(seed_value)
        @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
        @given(strategy)
        def fuzz_module(case):
            self.run_case(case)

        fuzz_module()
        if self.fatal:
            raise self.fatal
        self.drain()
        for runner in self.runners:
            self.reset(runner)


def counts_per_module(total, modules):
    shares = {module: SHARES[module] for module in modules}
    whole = sum(shares.values())
    counts = {module: -(-total * share // whole) for module, share in shares.items()}  # rounded up
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--cases", type=int, default=10_400, help="cases in all, shared out between the modules")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random, printed)")
    parser.add_argument("--module", action="append", choices=sorted(SHARES), help="only these modules")
    parser.add_argument("--hosts", type=int, default=2, help="test hosts running cases side by side")
    parser.add_argument("--report", default=os.path.join(REPO, "build", "fuzz-report.json"))
    parser.add_argument("--budget", type=float, help="fail when the whole run (boot to teardown) takes longer (s)")
    parser.add_argument("--plugins", default=os.path.join(REPO, "plugins"),
                        help="the collection's plugins directory to test (default: this checkout's; a copy to try a change)")
    parser.add_argument("--trace", help="write every case and its answer to this file, one JSON line each")
    args = parser.parse_args(argv)
    seed_value = args.seed if args.seed is not None else random.randrange(2 ** 32)
    modules = args.module or list(SHARES)
    started = time.monotonic()
    fleet = Fleet(os.environ.get("OPDBUS_FLEET_NAME", "fuzz"))
    if os.path.exists(fleet.state_file):
        # Someone else's run (or a crashed one): tearing it down here would pull the hosts from under it.
        print(f"fuzz: error: fleet {fleet.name!r} is already up; run `fleet.py down --name {fleet.name}` first, or set "
              "OPDBUS_FLEET_NAME to another name", file=sys.stderr)
        return 1

    def stop(_signum, _frame):
        raise KeyboardInterrupt  # Hypothesis lets this one through unwrapped; the fleet goes down below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    runners = []
    tally = Tally()
    rc = 1
    try:
        fleet.up(args.hosts, btrfs=["all"])
        os.makedirs(os.path.dirname(args.report), exist_ok=True)
        tar, trees = payload(args.plugins)
        for host in fleet.hosts():
            runners.append(Runner(host, leader_pid(fleet, host), tar, args.report.replace(".json", f"-{host}.log")))
        # The first host makes the seed ledgers; the others adopt them, so a case means the same on each.
        setup = runners[0].request({"op": "setup", "modules": modules}, timeout=300)
        for runner in runners[1:]:
            runner.send({"op": "setup", "modules": modules, "adopt": setup["export"]})
        for runner in runners[1:]:
            runner.receive(timeout=300)
        booted = time.monotonic() - started
        seeds = ", ".join(f"{name} ({info['lines']} entries)" for name, info in setup["seeds"].items())
        print(f"fuzz: {len(runners)} hosts up and runners ready in {booted:.1f} s; seed {seed_value}; "
              f"seed ledgers: {seeds}", flush=True)
        for line in setup["warnings"]:
            print(f"fuzz: warning: {line}", flush=True)
        for step in setup["seed_log"]:
            if not step["ok"]:
                print(f"fuzz: warning: seeding step {step['module']} failed: {step['msg'][:300]}", flush=True)
        ctx = {"seeds": setup["seeds"], "options": setup["options"], "trees": trees, "units": setup["units"]}
        trace = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
        fuzz = Fuzz(runners, ctx, tally, trace)
        for module, count in counts_per_module(args.cases, modules).items():
            before = time.monotonic()
            fuzz.module(module, count, seed_value)
            print(f"fuzz: {module}: {tally.by_module[module]['cases']} cases in {time.monotonic() - before:.1f} s",
                  flush=True)
        elapsed = time.monotonic() - started
        tally.print(sys.stdout, elapsed, seed_value)
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump({"seed": seed_value, "total": tally.total, "by_module": tally.by_module,
                       "by_kind": tally.by_kind, "failures": tally.failures, "seconds": round(elapsed, 1)},
                      handle, indent=1, default=repr)
        print(f"fuzz: report written to {args.report}")
        rc = 1 if tally.failures else 0
        required = MIN_CASES if not args.module and args.cases >= MIN_CASES else int(args.cases * 0.95)
        if tally.total < required:
            print(f"fuzz: FAILED: only {tally.total} cases ran, fewer than {required}")
            rc = 1
    except (FleetError, KeyboardInterrupt) as error:
        if isinstance(error, KeyboardInterrupt):
            print("fuzz: interrupted; taking the fleet down", file=sys.stderr)
            rc = 130
        else:
            print(f"fuzz: error: {error}", file=sys.stderr)
            for runner in runners:
                runner.diagnose()
        if tally.total:  # what ran until then, failures included
            tally.print(sys.stdout, time.monotonic() - started, seed_value)
    finally:
        for runner in runners:
            with contextlib.suppress(Exception):
                runner.close()
        fleet.down()
        leftovers = fleet.leftovers()
        if leftovers:
            print(f"fuzz: FAILED: the fleet left {'; '.join(leftovers)}", file=sys.stderr)
            rc = 1
    total = time.monotonic() - started
    if args.budget and total > args.budget:
        print(f"fuzz: FAILED: the run took {total:.0f} s, over its budget of {args.budget:.0f} s")
        rc = 1
    else:
        print(f"fuzz: the run took {total:.0f} s" + (f" (budget {args.budget:.0f} s)" if args.budget else ""))
    return rc


if __name__ == "__main__":
    sys.exit(main())
