# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The desired state document, given inline or as a file on the host.
    DOCUMENTATION = r"""
options:
  state:
    description:
      - The desired state document, op-dbus compatible.
      - V(version) must be V(1). Under C(plugins.systemd.units), each key is a unit name
        (an instance for template units) and each value may set C(active_state) (V(active) or V(inactive)),
        C(enabled) (boolean) and C(masked) (boolean). Fields left out are not managed.
      - Unknown versions, plugins or fields and invalid unit names fail with the exact path of the
        problem, for example C(plugins.systemd.units["cups.service"].enabld) for a misspelt field.
      - Mutually exclusive with O(src).
    type: dict
  src:
    description:
      - Path of a JSON file on the managed host holding the desired state document, for example
        C(/etc/op-dbus/state.json).
      - Mutually exclusive with O(state).
    type: path
"""
