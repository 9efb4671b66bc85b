#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_state_info
short_description: Live systemd unit state over D-Bus, and drift against a desired state document
version_added: 0.1.0
description:
  - Reads the live state of systemd units through systemd's D-Bus API (load, active and sub state,
    unit file state, whether the unit is enabled and whether it is masked).
  - With a desired state document (O(state) or O(src)), reports C(drift), the declared units whose
    live state differs from their declaration and the actions M(opdbus.fleet.opdbus_state) would run.
  - With O(query), evaluates a JMESPath expression on the host over the result, so only the answer
    travels back to the controller.
author:
  - opdbus.fleet developers (@opdbus)
extends_documentation_fragment:
  - opdbus.fleet.attributes.info_module
  - opdbus.fleet.query
  - opdbus.fleet.state_document
  - opdbus.fleet.systemd
options:
  units:
    description:
      - Units to report.
      - Defaults to the units declared in O(state) or O(src) when one is given, else every unit
        systemd knows (loaded units and installed unit files; templates without an instance excluded).
    type: list
    elements: str
seealso:
  - module: opdbus.fleet.opdbus_state
"""

EXAMPLES = r"""
- name: Read two units
  opdbus.fleet.opdbus_state_info:
    units: [ssh.service, cron.service]
  register: info

- name: Report drift from the document on the host
  opdbus.fleet.opdbus_state_info:
    src: /etc/op-dbus/state.json
  register: drift_report
  failed_when: not drift_report.in_sync

- name: Only bring back the names of failed units
  opdbus.fleet.opdbus_state_info:
    query: "units | items(@)[?[1].active_state == 'failed'][0]"
  register: failed_units
"""

RETURN = r"""
units:
  description: Live state of each reported unit.
  returned: always
  type: dict
  sample:
    ssh.service:
      load_state: loaded
      active_state: active
      sub_state: running
      unit_file_state: enabled
      enabled: true
      masked: false
drift:
  description:
    - Declared units whose live state differs from the document, with the differing C(fields)
      (desired and actual values) and the C(actions) M(opdbus.fleet.opdbus_state) would run.
    - A unit that cannot be brought to its declaration (for example one declared active that is
      not installed) has a C(problem).
    - What M(opdbus.fleet.opdbus_state) would leave as it is is not drift, so neither a unit that is not
      installed and declared inactive or disabled (see RV(absent)) nor a unit declared active whose
      start conditions systemd found unmet (see RV(conditions_unmet)).
    - Empty when no document is given.
  returned: always
  type: dict
  sample:
    ssh.service:
      fields: {active_state: {desired: active, actual: inactive}}
      actions: [start]
absent:
  description: Declared units that are not installed and hold their declaration as they are.
  returned: always
  type: list
  elements: str
conditions_unmet:
  description: Declared-active units that systemd does not start because of unmet C(Condition*=) settings.
  returned: always
  type: dict
  sample: {"bluetooth.service": ["ConditionPathIsDirectory=/sys/class/bluetooth"]}
in_sync:
  description: Whether the live state matches the document (always true without one).
  returned: always
  type: bool
query_result:
  description: The answer of O(query).
  returned: when O(query) is set
  type: raw
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import (
    ArgumentSpec, document_spec, query_spec, scope_spec)
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module
from ansible_collections.opdbus.fleet.plugins.module_utils._state.tasks import state_info_task


def main():
    spec = document_spec().merge(scope_spec(), query_spec(), ArgumentSpec(dict(units=dict(type="list", elements="str"))))
    run_module(spec, state_info_task, needs=("dbus",))


if __name__ == "__main__":
    main()
