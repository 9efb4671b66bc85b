# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Where a module that changes the host records what it did, and how long it waits for other runs.
    DOCUMENTATION = r"""
options:
  ledger_path:
    description:
      - The ledger directory, where every change this module makes is recorded.
      - Defaults to C(/var/lib/op-dbus/blockchain); for O(ignore:scope=user) (where the module
        has that option) to C($XDG_STATE_HOME/op-dbus/blockchain).
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another op-dbus run on the same ledger (a playbook, the snapshot
        timer, the C(opdbus) command on the host) to finish. Runs on one ledger take turns, from
        planning through their last ledger entry, so that none plans from a state another is changing.
      - When the time runs out the task fails, naming the run it waited for, and changes nothing.
    type: int
    default: 120
seealso:
  - module: opdbus.fleet.opdbus_ledger_info
"""

    # For the modules that change the host themselves.
    WRITE_AHEAD = r"""
options: {}
notes:
  - Before its first change the module records an C(intent) entry with the planned actions, and
    afterwards the outcome, also when the run fails part-way. A run killed in between is reported
    by the next run and by M(opdbus.fleet.opdbus_ledger_info) as interrupted.
"""
