# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Writers killed at random moments, and writers racing each other, leave a valid ledger."""

from __future__ import annotations

import os
import random
import signal
import time

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger

KILLS = 1000
# A fresh ledger every so often keeps each verification cheap.
KILLS_PER_LEDGER = 50


def fork(work):
    """Run ``work()`` in a child process that never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def append_forever(directory, ack_fd):
    """Append in a loop, reporting "seq root" once each append has returned (is acknowledged)."""
    ledger = Ledger(directory, host="crash-host")
    n = 0
    while True:
        entry = ledger.append("apply", [{"unit": "unit%d.service" % n, "field": "enabled", "from": False, "to": True}])
        os.write(ack_fd, b"%d %s\n" % (entry["seq"], entry["checkpoint"]["root"].encode("ascii")))
        n += 1


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_sigkill_at_random_moments(tmp_path):
    rng = random.Random(20240501)
    residue = {"head_lag": 0, "torn_tail": 0}
    acknowledged = {}
    directory = None
    started = time.monotonic()
    for kill in range(KILLS):
        if kill % KILLS_PER_LEDGER == 0:
            directory = str(tmp_path / ("ledger%d" % kill))
            acknowledged = {}
        read_fd, write_fd = os.pipe()
        pid = fork(lambda: append_forever(directory, write_fd))
        os.close(write_fd)
        time.sleep(rng.uniform(0, 0.004))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acks = read_all(read_fd)
        os.close(read_fd)
        # A half-written report line means the kill hit while reporting: not counted as acknowledged.
        new = {}
        for line in acks.split(b"\n")[:-1]:
            seq, root = line.split()
            new[int(seq)] = root.decode("ascii")
        acknowledged.update(new)

        ledger = Ledger(directory)
        result = ledger.verify()
        assert result["valid"], (kill, result)
        assert len(result["recoverable"]) <= 1, (kill, result)
        if acknowledged:
            assert result["checkpoint"]["size"] > max(acknowledged), kill
        # Each acknowledged entry is still there, and still what it was when acknowledged.
        for seq, root in new.items():
            anchor = dict(result["checkpoint"], size=seq + 1, root=root)
            assert ledger.verify(anchor=anchor)["valid"], (kill, anchor)
        for item in result["recoverable"]:
            residue[item["kind"]] += 1
            # Half of the time recover here; otherwise the next writer recovers, and may be
            # killed while doing so.
            if kill % 2 == 0:
                appended = ledger.append("recover", [])
                assert [(r["kind"], r["seq"]) for r in appended["recovered"]] == \
                    [(item["kind"], item["seq"])], kill
                acknowledged[appended["seq"]] = appended["checkpoint"]["root"]
                after = ledger.verify()
                assert after["valid"] and after["recoverable"] == [], kill
                # The reported checkpoint already counted an adopted entry and left out a torn one.
                assert after["checkpoint"]["size"] == result["checkpoint"]["size"] + 1, kill
    elapsed = time.monotonic() - started
    # The kills must actually land inside appends, not only between them.
    assert residue["head_lag"] >= KILLS // 100, residue
    assert elapsed < 120, elapsed


def test_concurrent_writers(tmp_path):
    directory = str(tmp_path / "bc")
    writers, appends = 8, 500

    def write(worker):
        ledger = Ledger(directory, host="writer%d" % worker, lock_timeout=120)
        for n in range(appends):
            ledger.append("apply", {"worker": worker, "n": n})

    pids = [fork(lambda worker=worker: write(worker)) for worker in range(writers)]
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    assert statuses == [0] * writers
    ledger = Ledger(directory)
    result = ledger.verify()
    assert result["valid"] and result["recoverable"] == [] and result["checkpoint"]["size"] == writers * appends
    entries = ledger.entries()
    assert [e["seq"] for e in entries] == list(range(writers * appends))
    for worker in range(writers):
        assert [e["changes"]["n"] for e in entries if e["changes"]["worker"] == worker] == list(range(appends))
