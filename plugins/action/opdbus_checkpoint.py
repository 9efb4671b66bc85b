# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the ledger's checkpoints: the host proves, the controller checks and keeps.

The host runs opdbus_ledger_info with the stored checkpoint as its anchor and returns its current
checkpoint and a consistency proof. Everything the host says is data: the proof is verified here,
with the collection's merkle code, against the checkpoint the controller stored, so a host that
answers ``valid: true`` about a truncated or rewritten ledger still fails.
"""

from __future__ import annotations

import json
import os
import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import atomic_write, read_text
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.anchors import (
    check_extension,
    describe,
    parse_checkpoint,
)
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import DEFAULT_LEDGER_DIR

FACT_NAME = "opdbus_checkpoint"
LEDGER_INFO = "opdbus.fleet.opdbus_ledger_info"
# Problems the host reports about the anchor are decided here, from the proof, not taken from the host.
_ANCHOR_PROBLEMS = frozenset(("anchor_origin_mismatch", "anchor_truncated", "anchor_inconsistent"))
# The file name is the inventory name; anything that could leave the directory or hide the file is refused.
_SAFE_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("anchor_dir", "use_fact", "path"))
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        args = self.validate_argument_spec(argument_spec=dict(
            anchor_dir=dict(type="path"),
            use_fact=dict(type="bool", default=True),
            path=dict(type="path", default=DEFAULT_LEDGER_DIR),
        ))[1]
        host = task_vars.get("inventory_hostname")
        anchor_file = self._anchor_file(args["anchor_dir"], host)
        stored, stored_in = self._stored_checkpoint(anchor_file, args["use_fact"], task_vars)

        module_args = {"path": args["path"], "limit": 0, "fail_on_invalid": False}
        if stored is not None:
            module_args["anchor"] = stored
        reply = self._execute_module(module_name=LEDGER_INFO, module_args=module_args, task_vars=task_vars)
        if reply.get("failed"):
            reply.pop("ansible_facts", None)
            return dict(result, **reply)

        current = reply.get("checkpoint")
        proof = (reply.get("anchor_proof") or {}).get("proof")
        result.update(checkpoint=current, stored_checkpoint=stored, stored_in=stored_in)
        if stored is not None:
            problem = check_extension(stored, current, proof)
        else:
            # First contact: nothing to hold the ledger to yet, so the checkpoint is taken on trust.
            problem = self._well_formed(current)
        host_problems = [p for p in reply.get("problems") or [] if p.get("kind") not in _ANCHOR_PROBLEMS]
        if problem is not None:
            kind, message = problem
            result.update(failed=True, problem=kind,
                          msg="%s: %s. The stored checkpoint is kept." % (kind, message))
            return result
        if host_problems:
            result.update(failed=True, problem=host_problems[0].get("kind"), problems=host_problems,
                          msg="the host's ledger fails its own verification (%s), so its checkpoint %s is not "
                              "stored; the stored checkpoint is kept" % (
                                  "; ".join("%s: %s" % (p.get("kind"), p.get("message")) for p in host_problems),
                                  describe(current)))
            return result

        changed = current != stored
        result["changed"] = changed
        if self._task.diff and changed:
            result["diff"] = {"before": _as_text(stored), "after": _as_text(current),
                              "before_header": "stored checkpoint", "after_header": "host's checkpoint"}
        if self._task.check_mode:
            return result  # predicts; stores neither the file nor the fact
        if anchor_file is not None and changed:
            try:
                atomic_write(anchor_file, _as_text(current).encode("utf-8"), 0o600, directory_mode=0o700)
            except OSError as exc:
                raise AnsibleActionFail("cannot store the checkpoint in %s: %s" % (anchor_file, exc)) from exc
        # Returned also when unchanged, so a fact cache that lost it (a new AWX inventory) gets it back.
        result["ansible_facts"] = {FACT_NAME: current}
        return result

    @staticmethod
    def _anchor_file(anchor_dir, host):
        if anchor_dir is None:
            return None
        if not isinstance(host, str) or not _SAFE_HOST_NAME.fullmatch(host):
            raise AnsibleActionFail("cannot keep a checkpoint file for the inventory name %r in anchor_dir: use "
                                    "names of letters, digits and . _ - : @ that do not start with a dot" % (host,))
        return os.path.join(anchor_dir, host + ".json")

    @staticmethod
    def _stored_checkpoint(anchor_file, use_fact, task_vars):
        """The checkpoint to hold the host to and where it came from: the anchor file, else the cached fact."""
        if anchor_file is not None:
            try:
                text = read_text(anchor_file)
            except (OSError, UnicodeDecodeError) as exc:
                raise AnsibleActionFail("cannot read the stored checkpoint %s: %s" % (anchor_file, exc)) from exc
            if text is not None:
                return _parsed(text, anchor_file), anchor_file
        if use_fact:
            cached = (task_vars.get("ansible_facts") or {}).get(FACT_NAME)
            if cached is not None:
                return _checked(cached, "the cached fact %s" % FACT_NAME), "fact"
        return None, None

    @staticmethod
    def _well_formed(current):
        try:
            parse_checkpoint(current, "the host's checkpoint")
        except ValueError as exc:
            return "bad_checkpoint", str(exc)
        return None


def _parsed(text, source):
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AnsibleActionFail("the stored checkpoint %s is not JSON (%s); restore it from a backup, or remove it "
                                "to trust the host's next checkpoint" % (source, exc)) from exc
    return _checked(value, source)


def _checked(value, source):
    try:
        parse_checkpoint(value, "the stored checkpoint")
    except ValueError as exc:
        raise AnsibleActionFail("%s: %s; restore it from a backup, or remove it to trust the host's next "
                                "checkpoint" % (source, exc)) from exc
    return {"origin": value.get("origin"), "size": value.get("size"), "root": value.get("root")}


def _as_text(checkpoint):
    return "" if checkpoint is None else json.dumps(checkpoint, sort_keys=True, indent=2) + "\n"
