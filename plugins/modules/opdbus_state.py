#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_state
short_description: Apply a desired systemd state through D-Bus and record every change in the ledger
version_added: 0.1.0
description:
  - Brings the systemd units declared in a desired state document to their declared state
    (running or not, enabled or not, masked or not) by calling systemd's D-Bus API directly;
    it reads all units in one C(ListUnitsByNames) call and uses C(EnableUnitFiles), C(DisableUnitFiles),
    C(MaskUnitFiles), C(UnmaskUnitFiles), C(Reload), and C(StartUnit)/C(StopUnit) in mode C(replace),
    waiting for each job to finish and re-reading the unit afterwards.
  - One call handles any number of units. Every unit is checked before anything is changed, so an
    invalid document, a unit declared active or enabled that does not exist, or an action systemd
    would refuse changes nothing. Refused while planning are masking a unit whose own file is in
    C(/etc/systemd/system) (systemd masks by putting a symlink there), enabling or disabling a unit
    without an C([Install]) section or with a broken unit file, starting a unit whose load state is
    C(error) or C(bad-setting) or that sets C(RefuseManualStart=yes) (C(RefuseManualStop=yes) for
    stopping), and an unmask that would leave a runtime mask in C(/run).
  - For each unit the order is unmask, enable or disable, daemon-reload (also when a unit reports
    C(NeedDaemonReload)), start or stop, mask.
  - Every run that changes something records it in the host's tamper-evident ledger (see
    M(opdbus.fleet.opdbus_ledger_info)), an C(intent) entry with the planned actions before the first
    change, then one C(apply) entry listing each unit's actions and its state before and after,
    the files written, and the SHA-256 of the resulting state, which is kept as a restore point
    (M(opdbus.fleet.opdbus_snapshot) O(opdbus.fleet.opdbus_snapshot#module:state=restored) with the
    entry's C(seq)). A run that changes nothing appends nothing.
  - The document is written to O(state_file) and, once every unit has reached it, to
    C(state/current.json) in the ledger directory, so the two are equal after a successful run.
  - If a unit fails, the other units are still processed, the task fails naming every failed unit,
    and the ledger records what did change.
author:
  - opdbus.fleet developers (@opdbus)
extends_documentation_fragment:
  - opdbus.fleet.state_document
  - opdbus.fleet.systemd
  - opdbus.fleet.apply
  - opdbus.fleet.ledger
  - opdbus.fleet.ledger.write_ahead
attributes:
  check_mode:
    support: full
    description: Reports exactly the actions that would run; nothing on the host changes.
  diff_mode:
    support: full
    description: Shows each changed unit's C(active_state), C(enabled) and C(masked) before and after.
notes:
  - Fields left out of a unit's entry are not managed. C(enabled=true) is satisfied by units that
    systemd starts through their dependencies (C(static), C(alias), C(indirect), C(generated),
    C(transient)); C(enabled=false) fails for those, because they cannot be disabled, only masked.
  - A masked unit cannot be enabled or started until it is unmasked; declare C(masked=false) to do so.
  - A unit that is not installed satisfies C(active_state=inactive) and C(enabled=false) as it is,
    and can be masked; it is reported in RV(absent). Declared active or enabled, it is an error.
  - A unit declared active whose start systemd skips because a C(Condition*=) setting is unmet
    (bluetooth on a machine without an adapter, say) is reported in RV(conditions_unmet), not
    failed; once systemd has found the condition unmet, no further start is tried (systemd starts
    the unit itself when what it waits for appears). A failed C(Assert*=) is a failure.
  - Check mode predicts the real run (actions, files, diff), with one exception it cannot know, a
    start whose conditions systemd has never evaluated is predicted to run, and the real run may
    then report it in RV(conditions_unmet) instead.
seealso:
  - module: opdbus.fleet.opdbus_state_info
"""

EXAMPLES = r"""
- name: Hold the laptop profile's services in their declared state
  opdbus.fleet.opdbus_state:
    state:
      version: 1
      plugins:
        systemd:
          units:
            ssh.service: {active_state: active, enabled: true}
            cups.service: {active_state: inactive, enabled: false, masked: true}
  register: applied

- name: Show which units changed and the ledger checkpoint after the run
  ansible.builtin.debug:
    msg: "{{ applied.actions }} -> {{ applied.checkpoint }}"

- name: Apply the document already on the host (for example with ansible-pull)
  opdbus.fleet.opdbus_state:
    src: /etc/op-dbus/state.json

- name: Manage a user's own units (lingering enabled for that user)
  become: true
  become_user: builder
  opdbus.fleet.opdbus_state:
    scope: user
    state:
      version: 1
      plugins: {systemd: {units: {"sync.timer": {active_state: active, enabled: true}}}}
"""

RETURN = r"""
actions:
  description: The actions that ran (in check mode, that would run), in order.
  returned: always
  type: list
  elements: dict
  contains:
    unit: {description: The unit name., type: str, returned: always}
    action:
      description: One of V(unmask), V(enable), V(disable), V(start), V(stop), V(mask).
      type: str
      returned: always
  sample: [{"unit": "cups.service", "action": "stop"}, {"unit": "cups.service", "action": "mask"}]
units:
  description:
    - Live state of every declared unit after the run (before it, in check mode), as systemd reports
      it, in the form of RV(opdbus.fleet.opdbus_state_info#module:units).
  returned: always
  type: dict
files:
  description: The state files this run wrote (in check mode, would write).
  returned: always
  type: list
  elements: str
  sample: ["/etc/op-dbus/state.json", "/var/lib/op-dbus/blockchain/state/current.json"]
absent:
  description: Declared units that are not installed and hold their declaration as they are.
  returned: always
  type: list
  elements: str
  sample: ["cups.service"]
conditions_unmet:
  description: Units declared active that systemd does not start because of unmet C(Condition*=) settings.
  returned: always
  type: dict
  sample: {"bluetooth.service": ["ConditionPathIsDirectory=/sys/class/bluetooth"]}
interrupted:
  description:
    - Seqs of intents whose run was interrupted before recording its outcome (killed, or the host
      lost power). This run warns about each; the first run that changes something records an
      C(interrupted) entry for it.
  returned: always
  type: list
  elements: int
failed_units:
  description: Units that did not reach their declared state, with the reason.
  returned: when a unit failed
  type: dict
  sample: {"broken.service": "plugins.systemd.units[\"broken.service\"] did not reach active_state=active: ..."}
entry:
  description: The outcome entry this run appended to the ledger; V(null) when nothing changed or in check mode.
  returned: always
  type: dict
  sample:
    seq: 12
    action: apply
    host: laptop-17
    actor: root
    time: "2026-11-22T10:00:00.000000Z"
    changes: {units: [{unit: cups.service, actions: [stop, mask], before: {}, after: {}}], files: []}
    state_sha256: 9f2c...
    prev_root: 3a7b...
checkpoint:
  description: The ledger checkpoint after the run; keep it on the controller to detect truncation or rewrites later.
  returned: always
  type: dict
  contains:
    origin: {description: Identity of this host's ledger., type: str, returned: always}
    size: {description: Number of entries., type: int, returned: always}
    root: {description: RFC 6962 Merkle root of the entries (hex)., type: str, returned: always}
timing:
  description: Time spent inside the module, in milliseconds.
  returned: always
  type: dict
  sample: {"total_ms": 31.2}
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import apply_spec, document_spec, scope_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module
from ansible_collections.opdbus.fleet.plugins.module_utils._state.tasks import apply_task


def main():
    run_module(document_spec(required=True).merge(scope_spec(), apply_spec()), apply_task, needs=("dbus",), timed=True)


if __name__ == "__main__":
    main()
