# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write-ahead recording of runs: intents, outcomes, interrupted runs and the run lock (real files, real flocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import LedgerError, canonical_json
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.merkle import Frontier, leaf_hash
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
from ansible_collections.opdbus.fleet.tests.unit.fixtures.ledger.builder import write_ledger

PLANNED = [{"unit": "a.service", "action": "start"}, {"unit": "b.service", "action": "mask"}]


def head_bytes(ledger):
    with open(ledger.head_path, "rb") as handle:
        return handle.read()


def test_an_outcome_names_its_intent_and_the_ledger_verifies(tmp_path):
    ledger = Ledger(str(tmp_path))
    with RecordedRun(ledger, "apply") as run:
        run.intend(PLANNED)
        entry = run.record({"units": ["whatever"]})
    assert run.intent["action"] == "intent"
    assert run.intent["changes"] == {"for": "apply", "planned": PLANNED}
    assert entry["action"] == "apply" and entry["changes"]["intent"] == run.intent["seq"] == entry["seq"] - 1
    verification = ledger.verify()
    assert verification["valid"] and verification["interrupted"] == [] and verification["recoverable"] == []
    assert verification["checkpoint"] == entry["checkpoint"]


def test_the_intent_reaches_the_disk_before_head_json_is_updated(tmp_path):
    ledger = Ledger(str(tmp_path))
    ledger.append("snapshot", {})
    before = head_bytes(ledger)
    with RecordedRun(ledger, "apply") as run:
        run.intend(PLANNED)
        # One sync: the line is durable, head.json waits for the outcome.
        assert head_bytes(ledger) == before
        assert ledger.last_entry()["seq"] == run.intent["seq"]
        during = ledger.verify()
        assert during["valid"] and during["in_progress"] == run.intent["seq"] and during["interrupted"] == []
        run.record({})
    assert head_bytes(ledger) != before
    assert json.loads(head_bytes(ledger))["size"] == 3


def test_an_exception_after_the_intent_still_records_the_outcome(tmp_path):
    ledger = Ledger(str(tmp_path))
    with pytest.raises(OpdbusError, match="daemon-reload failed") as failed:
        with RecordedRun(ledger, "apply") as run:
            run.intend(PLANNED)
            run.progress["actions"] = [PLANNED[0]]
            raise OpdbusError("daemon-reload failed")
    # The task result says the run changed something, and which entry recorded it.
    assert failed.value.details["changed"] is True and failed.value.details["entry"]["seq"] == 1
    outcome = ledger.last_entry()
    assert outcome["action"] == "apply"
    assert outcome["changes"] == {"actions": [PLANNED[0]], "error": "daemon-reload failed", "intent": 0}
    assert run.entry["seq"] == outcome["seq"]
    assert ledger.verify()["interrupted"] == []


def test_a_bug_after_the_intent_is_recorded_with_its_type(tmp_path):
    ledger = Ledger(str(tmp_path))
    with pytest.raises(KeyError):
        with RecordedRun(ledger, "numa") as run:
            run.intend(["write drop-in"])
            raise KeyError("units")
    assert ledger.last_entry()["changes"]["error"] == "KeyError: 'units'"


def test_no_intent_no_entry(tmp_path):
    ledger = Ledger(str(tmp_path))
    with RecordedRun(ledger, "apply"):
        pass
    assert ledger.checkpoint()["size"] == 0


KILLED_RUN = textwrap.dedent("""
    import os, sys
    from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger
    from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.recorded_run import RecordedRun
    run = RecordedRun(Ledger(sys.argv[1]), "apply").__enter__()
    run.intend([{"unit": "a.service", "action": "start"}])
    os.kill(os.getpid(), 9)
""")


def kill_a_run_after_its_intent(directory):
    result = subprocess.run([sys.executable, "-c", KILLED_RUN, str(directory)], stdin=subprocess.DEVNULL,
                            capture_output=True, env=dict(os.environ), check=False)
    assert result.returncode == -9, result.stderr


def test_a_killed_run_is_reported_and_closed_by_the_next_run(tmp_path):
    ledger = Ledger(str(tmp_path))
    kill_a_run_after_its_intent(tmp_path)
    seen = ledger.verify()
    assert seen["valid"]
    assert [(run["seq"], run["action"], run["resolved_by"]) for run in seen["interrupted"]] == [(0, "apply", None)]
    assert seen["interrupted"][0]["planned"] == [{"unit": "a.service", "action": "start"}]

    with RecordedRun(ledger, "apply", check_mode=True) as checking:
        pass
    assert checking.interrupted == [0] and "interrupted run" in checking.warnings[0]
    assert ledger.checkpoint()["size"] == 1  # check mode records nothing

    with RecordedRun(ledger, "apply") as reading:
        pass  # a run that changes nothing (or refuses its input) only warns
    assert reading.interrupted == [0] and ledger.checkpoint()["size"] == 1

    with RecordedRun(ledger, "apply") as run:
        run.intend(PLANNED)
        run.record({})
    assert run.interrupted == [0]
    assert "start a.service" in run.warnings[0]
    closing = ledger.entries()[1]
    assert closing["action"] == "interrupted" and closing["changes"] == {"intent": 0, "for": "apply"}
    after = ledger.verify()
    assert after["valid"] and [(r["seq"], r["resolved_by"]) for r in after["interrupted"]] == [(0, 1)]
    assert run.entry["changes"]["intent"] == 2
    with RecordedRun(ledger, "apply") as again:
        pass
    assert again.interrupted == [] and ledger.checkpoint()["size"] == 4


def test_every_interrupted_run_stays_listed_by_seq(tmp_path):
    ledger = Ledger(str(tmp_path))
    for _attempt in range(3):
        kill_a_run_after_its_intent(tmp_path)
        with RecordedRun(ledger, "apply") as run:
            run.intend(PLANNED)
            run.record({})
    verification = ledger.verify()
    assert verification["valid"]
    assert [(run["seq"], run["resolved_by"]) for run in verification["interrupted"]] == [(0, 1), (4, 5), (8, 9)]


def test_a_waiting_run_names_the_run_it_waits_for_and_times_out(tmp_path):
    ledger = Ledger(str(tmp_path))
    with RecordedRun(ledger, "apply"):
        with pytest.raises(LedgerError) as refused:
            with RecordedRun(Ledger(str(tmp_path)), "snapshot", lock_timeout=0.3):
                pass
    message = str(refused.value)
    assert "timed out after 0.3s waiting for the op-dbus run lock" in message
    assert f"pid {os.getpid()} (apply) since" in message


def test_check_mode_creates_no_ledger_directory(tmp_path):
    directory = tmp_path / "never"
    with RecordedRun(Ledger(str(directory)), "apply", check_mode=True):
        pass
    assert not directory.exists()


def test_last_entry_finds_long_lines_and_residue(tmp_path):
    ledger = Ledger(str(tmp_path))
    assert ledger.last_entry() is None
    ledger.append("apply", {"blob": "x" * 50000})
    assert ledger.last_entry()["changes"]["blob"] == "x" * 50000
    second = ledger.append("apply", {"n": 2})
    assert ledger.last_entry() == {key: value for key, value in second.items() if key not in ("checkpoint", "recovered")}
    ledger.append("intent", {"for": "apply", "planned": []}, defer_head=True)
    assert Ledger(str(tmp_path)).last_entry()["action"] == "intent"


def chained_lines(actions):
    """Canonical entry lines of a valid ledger with the given (action, changes) pairs."""
    frontier = Frontier()
    lines = []
    for seq, (action, changes) in enumerate(actions):
        line = canonical_json({"action": action, "actor": "root", "changes": changes, "host": "host1",
                               "prev_root": frontier.root().hex(), "seq": seq, "state_sha256": None,
                               "time": "2026-12-01T00:00:00.000000Z"})
        frontier.append(leaf_hash(line))
        lines.append(line)
    return lines


@pytest.mark.parametrize("size", [40, 30000])  # 30000 lines are verified in two processes
def test_interrupted_runs_are_found_in_both_halves_of_a_large_ledger(tmp_path, size):
    actions = []
    for seq in range(size):
        if seq in (3, size - 7):  # an interrupted run, closed by the next run
            actions.append(("intent", {"for": "apply", "planned": []}))
        elif seq in (4, size - 6):
            actions.append(("interrupted", {"intent": seq - 1, "for": "apply"}))
        elif seq % 10 == 0:
            actions.append(("intent", {"for": "apply", "planned": []}))
        elif seq % 10 == 1:
            actions.append(("apply", {"intent": seq - 1, "units": []}))
        else:
            actions.append(("snapshot", {"units": 1}))
    write_ledger(str(tmp_path), chained_lines(actions))
    verification = Ledger(str(tmp_path)).verify()
    assert verification["valid"]
    assert [(run["seq"], run["resolved_by"]) for run in verification["interrupted"]] == [(3, 4), (size - 7, size - 6)]
