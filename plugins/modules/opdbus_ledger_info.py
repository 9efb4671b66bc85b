#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the opdbus.fleet collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: opdbus_ledger_info
short_description: Read and verify the op-dbus change ledger of a host
version_added: 0.1.0
description:
  - Reads the append-only ledger in which the op-dbus modules record every change they make,
    and verifies it from the host's own files. Every line is re-hashed, every entry's link to
    the entries before it (C(prev_root)) is recomputed and C(head.json) is compared with the result,
    so editing, reordering or deleting any entry is detected.
  - Truncating the ledger, or rewriting it consistently from some entry on, can only be detected
    against a checkpoint seen earlier. Pass the C(checkpoint) returned by a previous run as O(anchor)
    to have the module prove, with an RFC 6962 consistency proof, that the ledger still extends it.
    Keep the checkpoints on the controller, not on the host.
  - A host that never recorded anything has no ledger directory. That is not an error; the module
    reports an empty, valid ledger with size 0 and the empty root.
  - Crash residue (an append interrupted by a crash) is reported in RV(recoverable) and does not make
    the ledger invalid; the next change recorded on the host cleans it up.
  - It also checks every live restore point (a C(snapshot), C(apply) or C(rollback) entry that names
    a stored state, see M(opdbus.fleet.opdbus_snapshot)); its blob must exist and decompress to bytes
    that hash to the entry's C(state_sha256). A missing or damaged blob is a problem (C(blob_missing),
    C(blob_corrupt)); restore points that a prune or delete removed are counted in RV(pruned), since
    their blobs are meant to be gone.
  - The file format and the threat model are described in the collection's C(docs/ledger.md).
author:
  - opdbus.fleet developers (@opdbus)
options:
  path:
    description:
      - Directory of the ledger on the target.
    type: path
    default: /var/lib/op-dbus/blockchain
  since:
    description:
      - Return only entries whose C(seq) is at least this number.
      - A negative number counts from the end, so V(-10) returns the last ten entries.
      - Verification always covers the whole ledger, whatever O(since) and O(limit) select.
    type: int
  limit:
    description:
      - Return at most this many entries, oldest first, starting at O(since).
      - V(0) returns no entries, for runs that only verify.
      - Without it every entry from O(since) on is returned, which can be a lot of data for a
        ledger with many thousands of entries.
    type: int
  anchor:
    description:
      - A checkpoint returned as RV(checkpoint) by an earlier run against the same host.
      - The ledger must have the same origin, at least as many entries, and its first C(size)
        entries must hash to C(root); otherwise verification fails with
        C(anchor_origin_mismatch), C(anchor_truncated) or C(anchor_inconsistent).
      - Its keys are C(origin) (the identity of the ledger; null only for the checkpoint of a host
        that had no ledger yet), C(size) (the number of entries it covers, an integer) and C(root)
        (the RFC 6962 Merkle root of those entries, as lowercase hex). Anything else is refused with
        a message that says which key is wrong.
    type: dict
  fail_on_invalid:
    description:
      - Fail the task when verification finds a problem or the ledger is not consistent with O(anchor).
      - With V(false) the task succeeds and reports RV(valid) and RV(problems) for the caller to act on.
    type: bool
    default: true
requirements:
  - jmespath, on the target, only when O(query) is used
attributes:
  check_mode:
    description: Can run in check_mode and return the same information as without it.
    support: full
  diff_mode:
    description: Reads only, so there is never a diff.
    support: none
notes:
  - The ledger is readable by root only, so the task needs privilege escalation (C(become)).
  - The module holds a shared lock on the ledger while it reads and verifies it, so entries, checkpoint
    and verification describe one state of the ledger, never half of a change being recorded at the
    same time; such a change waits until the module is done.
extends_documentation_fragment:
  - opdbus.fleet.query
seealso:
  - name: RFC 9162, Certificate Transparency Version 2.0, section 2.1
    description: The Merkle tree, inclusion and consistency proofs the ledger uses.
    link: https://www.rfc-editor.org/rfc/rfc9162#section-2.1
"""

EXAMPLES = r"""
- name: Verify the ledger and show the last 20 entries
  opdbus.fleet.opdbus_ledger_info:
    since: -20
  become: true
  register: ledger

- name: Report a problem without failing the play
  opdbus.fleet.opdbus_ledger_info:
    limit: 0
    fail_on_invalid: false
  become: true
  register: audit

- name: Show what is wrong
  ansible.builtin.debug:
    var: audit.problems
  when: not audit.valid

- name: Which units did the last 100 entries change? (evaluated on the host)
  opdbus.fleet.opdbus_ledger_info:
    since: -100
    query: "entries[?action=='apply'].changes[].unit"
  become: true
  register: changed_units

# Truncation and consistent rewrites can only be detected against a checkpoint kept
# elsewhere. Keep each host's last checkpoint on the controller and check the next run
# against it: the task fails if the ledger no longer extends what was seen last time.
- name: Verify against the checkpoint saved by the previous run, if there is one
  opdbus.fleet.opdbus_ledger_info:
    limit: 0
    anchor: "{{ lookup('ansible.builtin.file', checkpoint_file) | from_json if checkpoint_file is file else omit }}"
  vars:
    checkpoint_file: "{{ playbook_dir }}/checkpoints/{{ inventory_hostname }}.json"
  become: true
  register: verified

- name: Save the new checkpoint on the controller for the next run
  ansible.builtin.copy:
    content: "{{ verified.checkpoint | to_json }}\n"
    dest: "{{ playbook_dir }}/checkpoints/{{ inventory_hostname }}.json"
    mode: "0600"
  delegate_to: localhost
  become: false
"""

RETURN = r"""
entries:
  description:
    - The selected ledger entries, oldest first, as stored.
    - Each has C(seq), C(time) (UTC), C(host), C(actor), C(action), C(changes), C(state_sha256) and
      C(prev_root); see C(docs/ledger.md).
  returned: always
  type: list
  elements: dict
  sample:
    - seq: 0
      time: "2024-05-01T12:00:00.123456Z"
      host: laptop-17
      actor: root
      action: apply
      changes:
        - unit: cups.service
          field: active_state
          from: active
          to: inactive
      state_sha256: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
      prev_root: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
restore_points:
  description:
    - The live restore points (neither pruned nor deleted), oldest first, with C(id) (the seq of their
      ledger entry), C(kind) (C(snapshot), C(apply) or C(rollback)), C(time), C(digest) (SHA-256 of the
      uncompressed document), C(label) and C(units) (how many; both for snapshots only, else V(null)),
      C(btrfs) (read-only BTRFS snapshots taken with a snapshot) and C(size) (bytes of the compressed
      blob on disk, V(null) if it is missing).
    - Any of them can be restored with M(opdbus.fleet.opdbus_snapshot) O(opdbus.fleet.opdbus_snapshot#module:state=restored)
      and O(opdbus.fleet.opdbus_snapshot#module:id) set to its C(id).
  returned: always
  type: list
  elements: dict
  sample: [{id: 4, kind: apply, time: "2026-11-22T10:00:00.000000Z", digest: 3f5c..., label: null, units: null,
            btrfs: [], size: 212}]
pruned:
  description: How many restore points pruned or deleted entries removed; their blobs are not checked.
  returned: always
  type: int
  sample: 17
checkpoint:
  description:
    - The current checkpoint of the ledger, recomputed from its entries. Store it (on the controller)
      and pass it as O(anchor) next time.
    - When the ledger holds an interrupted but complete append (see RV(recoverable)), the checkpoint
      already includes that entry, as the next append will.
  returned: always
  type: dict
  contains:
    origin:
      description: Identity of the ledger, created with it. Null when the host has no ledger.
      type: str
      returned: always
      sample: "opdbus:laptop-17:6f1c0e4b9a2d4c3e8f7a6b5c4d3e2f10"
    size:
      description: Number of entries.
      type: int
      returned: always
      sample: 42
    root:
      description: RFC 6962 Merkle root of the entries, lowercase hex.
      type: str
      returned: always
      sample: 5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328
valid:
  description: Whether verification, including the O(anchor) check, found no problem.
  returned: always
  type: bool
  sample: true
problems:
  description:
    - What verification found, in file order; the first problem of each kind is listed and later
      ones of the same kind are counted in its C(detail).
    - C(seq) is the entry holding the record that failed to check out, or null for C(head.json)
      and the anchor.
    - Kinds include C(bad_json), C(not_canonical), C(bad_entry), C(seq_gap), C(seq_order),
      C(prev_root_mismatch), C(bad_head), C(head_size_mismatch), C(head_length_mismatch),
      C(head_root_mismatch), C(head_frontier_mismatch), C(bad_anchor), C(anchor_origin_mismatch),
      C(anchor_truncated) and C(anchor_inconsistent).
    - For restore points, C(blob_missing) and C(blob_corrupt) (one per blob, at the oldest restore
      point using it; its C(detail) names every restore point that cannot be restored), and
      C(bad_record) for a snapshot, apply, rollback, prune or delete entry holding something malformed
      (which the snapshot operations skip).
  returned: always
  type: list
  elements: dict
  sample:
    - seq: 17
      kind: prev_root_mismatch
      detail: >-
        entry 17's prev_root does not match the Merkle root of the 17 entries before it:
        entry 16, or this entry's prev_root, was altered, removed or moved
recoverable:
  description:
    - Crash residue, shaped like RV(problems) with kind C(torn_tail) (an unfinished line at the end)
      or C(head_lag) (a complete entry that C(head.json) does not cover yet). The next change recorded
      on the host repairs it; it does not make the ledger invalid.
  returned: always
  type: list
  elements: dict
  sample: []
interrupted:
  description:
    - Runs that recorded an C(intent) but no outcome (killed, or the host lost power), oldest first,
      each with C(seq) (of the intent), C(action) (the run's), C(planned) (what it meant to do, which
      may have happened in part or in full), C(time), C(resolved_by) (the seq of the C(interrupted)
      entry a later run appended, V(null) until one has) and C(detail).
    - They do not make the ledger invalid.
  returned: always
  type: list
  elements: dict
  sample: [{seq: 40, action: apply, planned: [{unit: cups.service, action: stop}], time: "2026-11-22T10:00:00.000000Z",
            resolved_by: 42, detail: "interrupted run: ..."}]
in_progress:
  description: The seq of the intent of a run that is still going as the module reads the ledger, else V(null).
  returned: always
  type: int
  sample: null
anchor_checked:
  description: Whether an O(anchor) was given and checked.
  returned: always
  type: bool
  sample: true
anchor_proof:
  description:
    - The RFC 6962 consistency proof from O(anchor) to RV(checkpoint), computed from the host's ledger.
    - The module checks it on the host, but a host whose root account is compromised could report
      anything. Checking the proof on the controller against the anchor kept there does not trust
      the host at all; C(docs/ledger.md) shows how, with the collection's C(merkle.py).
  returned: when O(anchor) is given and the ledger holds at least the anchor's C(size) entries
  type: dict
  contains:
    old_size:
      description: The anchor's C(size).
      type: int
      returned: always
      sample: 40
    old_root:
      description: Root of the anchor's first C(size) entries as the host's ledger has them now.
      type: str
      returned: always
      sample: d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7
    size:
      description: Size of RV(checkpoint).
      type: int
      returned: always
      sample: 42
    root:
      description: Root of RV(checkpoint).
      type: str
      returned: always
      sample: 5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328
    proof:
      description: The proof's node hashes, lowercase hex.
      type: list
      elements: str
      returned: always
      sample: ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]
query_result:
  description: The value of O(query) over the result.
  returned: when O(query) is given
  type: raw
  sample: ["cups.service", "sshd.service"]
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec, query_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import DEFAULT_LEDGER_DIR
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module
from ansible_collections.opdbus.fleet.plugins.module_utils._state.snapshots import ledger_info_task


def main():
    spec = query_spec().merge(ArgumentSpec(dict(
        path=dict(type="path", default=DEFAULT_LEDGER_DIR),
        since=dict(type="int"),
        limit=dict(type="int"),
        # Checked by the ledger (with messages naming the key), not with suboptions: ansible-core
        # crashes on a suboption spec given a value that is not a mapping.
        anchor=dict(type="dict"),
        fail_on_invalid=dict(type="bool", default=True),
    )))
    run_module(spec, ledger_info_task)


if __name__ == "__main__":
    main()
