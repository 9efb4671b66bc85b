# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run that may change the host: serialised with every other run, and recorded write-ahead.

Every path that changes the host goes through a RecordedRun::

    with RecordedRun(ledger, "apply", check_mode=check_mode) as run:
        plan = ...                      # planned under the run lock, from a state no other run changes
        run.intend(planned_actions)     # an ``intent`` entry, durable before the first change
        run.progress["actions"] = done  # kept up to date while changing
        run.record(changes, digest)     # the outcome, naming its intent

An exception after ``intend`` still appends the outcome, with what ``progress`` says was done and
the error. A run killed between intent and outcome leaves an intent as the ledger's last entry;
every later run warns about it, the next run that changes something appends an ``interrupted``
entry for it just before its own intent (a run that only reads, or refuses its input, writes
nothing), and verification lists every interrupted run by seq. The intent costs one sync: it is appended with ``defer_head``, and the
outcome's append writes the head for both.
"""

from __future__ import annotations


from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.entries import (
    INTENT_ACTION,
    INTERRUPTED_ACTION,
    LedgerError,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import DEFAULT_RUN_LOCK_TIMEOUT


def describe_planned(planned, limit=8):
    """A short text for planned actions: ``{"action", "unit"|"path"|"file"}`` items, or plain strings."""
    words = []
    for item in planned:
        target = next((item[key] for key in ("unit", "path", "file") if key in item), None) if isinstance(item, dict) else None
        words.append(f"{item.get('action', 'write')} {target}" if target is not None else str(item))
    more = f" and {len(words) - limit} more" if len(words) > limit else ""
    return ", ".join(words[:limit]) + more if words else "nothing recorded"


class RecordedRun:
    """See the module docstring. ``warnings`` are for the task result (interrupted runs, lock waits)."""

    def __init__(self, ledger, action, actor=None, check_mode=False, lock_timeout=DEFAULT_RUN_LOCK_TIMEOUT):
        self.ledger = ledger
        self.action = action
        self.actor = actor
        self.check_mode = check_mode
        self.lock = ledger.run_lock(action, lock_timeout)
        self.intent = None
        self.entry = None
        self.progress = {}
        self.interrupted = []
        self.warnings = []
        self._open_intent = None  # the interrupted run's intent, until this run records something

    def __enter__(self):
        self.lock.acquire(create=not self.check_mode)
        try:
            if self.lock.waited_for:
                self.warnings.append(f"waited {self.lock.waited:.1f} s for another op-dbus run to finish: "
                                     f"{self.lock.waited_for}")
            self._close_interrupted_run()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _close_interrupted_run(self):
        last = self.ledger.last_entry()
        if not last or last.get("action") != INTENT_ACTION:
            return
        changes = last.get("changes") if isinstance(last.get("changes"), dict) else {}
        planned = changes.get("planned") if isinstance(changes.get("planned"), list) else []
        self.interrupted.append(last.get("seq"))
        self._open_intent = last
        self.warnings.append(
            f"interrupted run: the {changes.get('for', 'unknown')} run that wrote intent seq {last.get('seq')} "
            f"at {last.get('time')} ended before recording its outcome; these actions may have happened: "
            f"{describe_planned(planned)}. This run starts from the state it finds, and the next run that "
            "changes something records an `interrupted` entry for it")

    def intend(self, planned):
        """Record PLANNED (a list) before the first change; the outcome will name this intent."""
        if self.check_mode:
            raise RuntimeError("a check-mode run changes nothing and records no intent")
        self._close_open_intent()
        self.intent = self.ledger.append(INTENT_ACTION, {"for": self.action, "planned": planned},
                                         actor=self.actor, defer_head=True)

    def _close_open_intent(self):
        if self._open_intent is not None:
            changes = self._open_intent.get("changes") if isinstance(self._open_intent.get("changes"), dict) else {}
            self.ledger.append(INTERRUPTED_ACTION, {"intent": self._open_intent.get("seq"), "for": changes.get("for")},
                               actor=self.actor)
            self._open_intent = None

    def record(self, changes, state_sha256=None):
        """Append the outcome CHANGES (a dict); returns the stored entry with its checkpoint."""
        self._close_open_intent()
        changes = dict(changes)
        if self.intent is not None:
            changes["intent"] = self.intent["seq"]
        self.entry = self.ledger.append(self.action, changes, state_sha256=state_sha256, actor=self.actor)
        return self.entry

    def __exit__(self, exc_type, exc, traceback):
        try:
            if self.intent is not None and self.entry is None:
                self._record_failure(exc)
        finally:
            self.lock.release()
        return False

    def _record_failure(self, exc):
        reason = str(exc) if exc is not None else "the run ended without recording its outcome"
        if exc is not None and not isinstance(exc, OpdbusError):
            reason = f"{type(exc).__name__}: {reason}"
        try:
            self.record(dict(self.progress, error=reason))
            if isinstance(exc, OpdbusError):
                # The task result says what the ledger says: whatever progress lists did happen.
                exc.details.update(changed=any(self.progress.values()), entry=self.entry,
                                   checkpoint=self.entry["checkpoint"])
        except (OpdbusError, ValueError) as failure:
            raise LedgerError(
                f"{reason}; and the ledger could not record this run's outcome ({failure}), so the next run "
                f"reports intent seq {self.intent['seq']} as interrupted") from None
