#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_ledger_record
short_description: Record in the host's op-dbus ledger a change that other tasks made
version_added: 0.1.0
description:
  - Appends one entry to the host's ledger, with the action O(action) and the details O(changes),
    so that changes made by other modules (files a role installs, packages it adds) are in the same
    tamper-evident audit trail as the changes of the opdbus.fleet modules, which record their own.
  - Run it after the change, conditioned on the change, for example C(when) over registered
    results. Each run that is not in check mode appends an entry, so it always reports a change.
  - Takes its turn on the ledger like every op-dbus run (see O(lock_timeout)).
author:
  - opdbus.fleet developers (@opdbus)
extends_documentation_fragment:
  - opdbus.fleet.ledger
options:
  action:
    description:
      - The entry's action, a lowercase word of letters, digits and underscores that starts with a
        letter, at most 64 characters, for example V(role_files).
      - The actions the collection's own runs write are refused (V(intent), V(interrupted),
        V(apply), V(snapshot), V(prune), V(delete_snapshot), V(rollback), V(numa),
        V(btrfs_subvolume), V(install)), since restore points and crash records are read back from them.
    type: str
    required: true
  changes:
    description:
      - What changed, stored as the entry's C(changes). Any mapping that JSON can hold (no NaN or
        infinities).
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Reports the change and appends nothing.
  diff_mode:
    support: none
    description: The entry is the record; there is no before and after to show.
notes:
  - The entry's C(actor) is the user the module runs as on the host, as for every entry.
seealso:
  - module: opdbus.fleet.opdbus_ledger_info
"""

EXAMPLES = r"""
- name: Install a file
  ansible.builtin.copy:
    src: site.conf
    dest: /etc/example/site.conf
    mode: "0644"
  register: site_conf

- name: Record it in the host's ledger
  opdbus.fleet.opdbus_ledger_record:
    action: role_files
    changes:
      role: example
      files: [/etc/example/site.conf]
  when: site_conf is changed  # noqa: no-handler
"""

RETURN = r"""
entry:
  description: The entry appended, with its C(checkpoint); V(null) in check mode.
  returned: always
  type: dict
  sample: {seq: 42, action: role_files, actor: root, changes: {role: example, files: [/etc/example/site.conf]},
           time: "2026-12-02T18:00:00.000000Z"}
checkpoint:
  description: The ledger checkpoint after the run.
  returned: always
  type: dict
interrupted:
  description: Seqs of intents of interrupted runs, as in RV(opdbus.fleet.opdbus_state#module:interrupted).
  returned: always
  type: list
  elements: int
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.record import record_spec, record_task
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module


def main():
    run_module(record_spec(), record_task)


if __name__ == "__main__":
    main()
