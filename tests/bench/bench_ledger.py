# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ledger throughput against the raw cost of the same work, with pass/fail targets.

Run with the collection importable, e.g. from the collection root:
    PYTHONPATH=/path/to/dir/holding/ansible_collections python tests/bench/bench_ledger.py

(a) verifying a 100k-entry ledger, against only SHA-256-hashing its lines as leaves;
(b) durable appends, against os.write + os.fsync of lines of the same sizes on the same file system;
(c) what the write-ahead intent costs a run that changes something: syncs and time of a recorded
    run (intent, then outcome) against a single append of its outcome (target: one extra sync).
Each measurement is the best of a few runs, which on a shared machine is the least disturbed one.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger import verify as ledger_verify
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.tests.unit.fixtures.ledger.builder import entry_lines, sample_changes, write_ledger

VERIFY_TARGET = 100000.0
APPEND_TARGET_RATIO = 0.25
INTENT_EXTRA_SYNCS = 1


def best_rate(count, run, repeat):
    """Highest count/second over ``repeat`` runs of ``run()``."""
    best = None
    for dummy in range(repeat):
        started = time.perf_counter()
        run()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    return count / best


def bench_verify(workdir, entries, repeat):
    lines, _frontier = entry_lines(entries, host="bench-host", seed=1)
    directory = os.path.join(workdir, "verify")
    checkpoint = write_ledger(directory, lines)
    ledger = Ledger(directory)
    result = ledger.verify(anchor=checkpoint)
    if not result["valid"] or result["checkpoint"] != checkpoint:
        raise SystemExit("benchmark ledger does not verify: %r" % (result["problems"][:3],))

    path = os.path.join(directory, "ledger.jsonl")

    def raw():
        with open(path, "rb") as handle:
            stored = handle.read().split(b"\n")
        sha = hashlib.sha256
        for line in stored:
            sha(b"\x00" + line).digest()

    rates = {
        "verify": best_rate(entries, lambda: ledger.verify(anchor=checkpoint), repeat),
        "raw": best_rate(entries, raw, repeat),
    }
    saved = ledger_verify._PARALLEL_MIN_LINES
    ledger_verify._PARALLEL_MIN_LINES = float("inf")
    try:
        rates["verify_one_process"] = best_rate(entries, lambda: ledger.verify(anchor=checkpoint), repeat)
    finally:
        ledger_verify._PARALLEL_MIN_LINES = saved
    rates["line_bytes"] = statistics.mean(len(line) + 1 for line in lines)
    return rates


def bench_append(workdir, appends, repeat):
    rng = random.Random(2)
    work = [(rng.choice(["apply", "snapshot"]), sample_changes(rng), "%064x" % rng.getrandbits(256))
            for dummy in range(appends)]
    sizes = []

    def appended():
        directory = tempfile.mkdtemp(dir=workdir)
        ledger = Ledger(os.path.join(directory, "bc"), host="bench-host")
        for action, changes, state in work:
            ledger.append(action, changes, state_sha256=state, actor="bench")
        # The raw baseline writes lines of exactly these sizes.
        with open(os.path.join(directory, "bc", "ledger.jsonl"), "rb") as handle:
            sizes[:] = [len(line) + 1 for line in handle.read().split(b"\n")[:-1]]
        shutil.rmtree(directory)

    def raw():
        path = os.path.join(workdir, "raw.jsonl")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        try:
            for size in sizes:
                os.write(fd, b"x" * (size - 1) + b"\n")
                os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)

    rates = {"append": best_rate(appends, appended, repeat)}
    rates["raw"] = best_rate(appends, raw, repeat)
    return rates


class SyncCounter:
    """Counts fsync and fdatasync calls made inside the block (the ledger's own, not an estimate)."""

    def __enter__(self):
        self.count = 0
        self._originals = os.fsync, os.fdatasync

        def counting(original):
            def call(fd):
                self.count += 1
                return original(fd)
            return call

        os.fsync, os.fdatasync = (counting(original) for original in self._originals)
        return self

    def __exit__(self, *exc):
        os.fsync, os.fdatasync = self._originals


def bench_intent(workdir, runs):
    """Syncs and seconds per run: a recorded run (intent + outcome) against one bare append."""
    planned = [{"unit": "bench-%03d.service" % index, "action": "start"} for index in range(20)]
    changes = {"units": sample_changes(random.Random(6962))}
    bare = Ledger(os.path.join(workdir, "bare"))
    recorded = Ledger(os.path.join(workdir, "recorded"))
    bare.append("apply", changes)
    recorded.append("apply", changes)

    def one_bare():
        bare.append("apply", changes)

    def one_recorded():
        with RecordedRun(recorded, "apply") as run:
            run.intend(planned)
            run.record(changes)

    result = {}
    for name, work in (("bare", one_bare), ("recorded", one_recorded)):
        with SyncCounter() as counter:
            work()
        result[name + "_syncs"] = counter.count
        started = time.perf_counter()
        for _run in range(runs):
            work()
        result[name + "_ms"] = (time.perf_counter() - started) * 1000 / runs
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp",
                        help="where to write (a temporary directory is made inside); default /var/tmp")
    parser.add_argument("--entries", type=int, default=100000, help="size of the ledger to verify")
    parser.add_argument("--appends", type=int, default=2000, help="number of durable appends")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    options = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-ledger-", dir=options.dir)
    try:
        verify = bench_verify(workdir, options.entries, options.repeat)
        append = bench_append(workdir, options.appends, options.repeat)
        intent = bench_intent(workdir, 200)
    finally:
        shutil.rmtree(workdir)

    cpus = len(os.sched_getaffinity(0))
    verify_ok = verify["verify"] >= VERIFY_TARGET
    append_ratio = append["append"] / append["raw"]
    append_ok = append_ratio >= APPEND_TARGET_RATIO
    extra_syncs = intent["recorded_syncs"] - intent["bare_syncs"]
    intent_ok = extra_syncs <= INTENT_EXTRA_SYNCS
    rows = [
        ("verify %d entries (%.0f B/line, %d CPU)" % (options.entries, verify["line_bytes"], cpus),
         "%.0f entries/s" % verify["verify"], "%.0f/s" % verify["raw"],
         "%.3f" % (verify["verify"] / verify["raw"]), ">= %.0f entries/s" % VERIFY_TARGET,
         "PASS" if verify_ok else "FAIL"),
        ("  same, in one process", "%.0f entries/s" % verify["verify_one_process"], "%.0f/s" % verify["raw"],
         "%.3f" % (verify["verify_one_process"] / verify["raw"]), "(information)", ""),
        ("durable append x%d" % options.appends, "%.0f appends/s" % append["append"],
         "%.0f/s" % append["raw"], "%.3f" % append_ratio, ">= %.2f x raw" % APPEND_TARGET_RATIO,
         "PASS" if append_ok else "FAIL"),
        ("recorded run: intent + outcome", "%d syncs, %.2f ms" % (intent["recorded_syncs"], intent["recorded_ms"]),
         "%d syncs, %.2f ms" % (intent["bare_syncs"], intent["bare_ms"]), "+%d sync" % extra_syncs,
         "<= +%d sync" % INTENT_EXTRA_SYNCS, "PASS" if intent_ok else "FAIL"),
    ]
    header = ("measurement", "ledger", "raw", "ratio", "target", "")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print("raw: verify = sha256(0x00 || line) of the same lines; append = os.write + os.fsync of the same sizes "
          "in %s; recorded run: against one bare append of the same outcome" % options.dir)
    return 0 if verify_ok and append_ok and intent_ok else 1


if __name__ == "__main__":
    sys.exit(main())
