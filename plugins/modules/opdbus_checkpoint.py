#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_checkpoint
short_description: Check on the controller that a host's ledger extends the checkpoint stored for it, then store the new one
version_added: 0.1.0
description:
  - An action that runs on the controller. It asks the host for its ledger's current checkpoint and
    an RFC 6962 consistency proof from the checkpoint the controller stored for that host (by
    running M(opdbus.fleet.opdbus_ledger_info) with that checkpoint as its anchor), verifies the
    proof on the controller with the collection's Merkle code, and only then stores the new
    checkpoint.
  - The host's own verdict (RV(opdbus.fleet.opdbus_ledger_info#module:valid)) is never taken for a
    pass. A host whose reply says C(valid) about a ledger that was truncated, rolled back to an
    earlier copy, replaced, or rewritten (even with as many entries as before) fails, because the
    proof it sends does not verify against the stored checkpoint.
  - On failure the stored checkpoint is kept and the task fails for that host only, with a message
    that names the problem and both checkpoints. A problem the host reports about its own ledger
    (a damaged entry, a missing blob) also fails the task and stores nothing.
  - The first run against a host has nothing to hold it to, so its checkpoint is stored on trust
    (trust on first use). Store checkpoints from a run you trust, and back O(anchor_dir) up.
  - The checkpoint is stored in O(anchor_dir), one file per host, and is returned as the fact
    C(opdbus_checkpoint), so a fact cache (AWX's fact storage, or Ansible's C(jsonfile) cache) keeps
    it between jobs whose files do not survive.
  - The threat model is in the collection's C(docs/fleet.md).
author:
  - opdbus.fleet developers (@opdbus)
options:
  anchor_dir:
    description:
      - Directory on the controller that holds one file per host, named after the inventory name
        with C(.json) appended. It is created (mode C(0700)) when missing.
      - Files are replaced in one rename after their bytes reached the disk, so runs with many
        C(forks) and a crash at any point leave every file whole.
      - When the directory holds a file for the host, the host is checked against it; otherwise
        against the fact C(opdbus_checkpoint), if O(use_fact) is set and the fact is cached.
      - Without it the checkpoint lives only in the fact cache.
    type: path
  use_fact:
    description:
      - Whether the cached fact C(opdbus_checkpoint) counts as the stored checkpoint when
        O(anchor_dir) holds no file for the host.
    type: bool
    default: true
  path:
    description:
      - Directory of the ledger on the host.
    type: path
    default: /var/lib/op-dbus/blockchain
attributes:
  action:
    support: full
    description: Runs on the controller, and runs M(opdbus.fleet.opdbus_ledger_info) on the host.
  async:
    support: none
    description: Runs synchronously.
  check_mode:
    support: full
    description: Checks the host as in a real run and reports whether the checkpoint would change, but
      writes no file and returns no fact, so the stored checkpoints stay as they are.
  diff_mode:
    support: full
    description: Shows the stored checkpoint and the host's.
  facts:
    support: full
    description: Returns the fact C(opdbus_checkpoint).
  platform:
    support: full
    platforms: posix
    description: Runs M(opdbus.fleet.opdbus_ledger_info) on the host.
notes:
  - The ledger is readable by root only, so the task needs privilege escalation (C(become)).
  - Run it once per host at the end of a rollout, after every task that records in the ledger.
seealso:
  - module: opdbus.fleet.opdbus_ledger_info
  - name: The collection's fleet guide
    description: The three ways of running the collection, where checkpoints live, and the threat model.
    link: https://github.com/opdbus/opdbus.fleet/blob/main/docs/fleet.md
"""

EXAMPLES = r"""
- name: Hold each host's ledger to the checkpoint stored for it, then store the new one
  opdbus.fleet.opdbus_checkpoint:
    anchor_dir: "{{ playbook_dir }}/checkpoints"
  become: true

- name: In AWX, where a job's files do not survive, keep the checkpoint in the fact cache only
  opdbus.fleet.opdbus_checkpoint:
  become: true
"""

RETURN = r"""
checkpoint:
  description: The host's current checkpoint, as the host reported it and the controller verified it.
  returned: when the host answered
  type: dict
  sample: {"origin": "2f6c1a0e-9c1b-4a8e-8d2e-0f3b7c5d1a22", "size": 42, "root": "3b8f0c0e9a0c5d7e2f1a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e"}
stored_checkpoint:
  description: The checkpoint the host was held to; null on first contact.
  returned: when the host answered
  type: dict
stored_in:
  description: Where the stored checkpoint came from, the anchor file's path or V(fact); null on first contact.
  returned: when the host answered
  type: str
problem:
  description:
    - Why the host failed. The controller's own findings are C(anchor_origin_mismatch),
      C(anchor_truncated), C(anchor_inconsistent) and C(bad_checkpoint) (a reply without a
      well-formed checkpoint); otherwise it is the first problem the host reports about its ledger.
  returned: failure
  type: str
  sample: anchor_truncated
problems:
  description: The problems the host reports about its own ledger, as M(opdbus.fleet.opdbus_ledger_info) returns them.
  returned: when the host reports problems
  type: list
  elements: dict
ansible_facts:
  description: Facts to add to the host's variables and to the fact cache.
  returned: success, not in check mode
  type: dict
  contains:
    opdbus_checkpoint:
      description: The stored checkpoint, equal to RV(checkpoint).
      type: dict
"""
