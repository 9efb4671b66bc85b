# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Where applied state lives, and how long jobs may take (used with the ledger fragment).
    DOCUMENTATION = r"""
options:
  state_file:
    description:
      - Where the applied desired state document is written on the host.
      - Defaults to C(/etc/op-dbus/state.json) for O(scope=system) and
        C($XDG_CONFIG_HOME/op-dbus/state.json) for O(scope=user).
    type: path
  job_timeout:
    description:
      - Seconds to wait for all start and stop jobs of the run to finish.
    type: int
    default: 90
"""
