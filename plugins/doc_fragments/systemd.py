# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The systemd instance a module talks to over D-Bus.
    DOCUMENTATION = r"""
options:
  scope:
    description:
      - V(system) talks to the system manager (PID 1) on the system bus.
      - V(user) talks to the systemd user instance of the user the module runs as, on that
        user's bus (C($DBUS_SESSION_BUS_ADDRESS), else C($XDG_RUNTIME_DIR/bus), else C(/run/user/UID/bus)).
        Use O(ignore:become_user) and enable lingering for users who are not logged in.
    type: str
    choices: [system, user]
    default: system
requirements:
  - systemd on the managed host
  - dbus-python on the managed host (C(python3-dbus) on Debian, Ubuntu, Fedora and RHEL); when the
    interpreter in use lacks it, the module re-runs itself under the system Python that has it
"""
