# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After converge: the laptop profile's own units (the checks every profile shares are in resources/tests)."""


def test_the_profile_units_hold(host):
    assert host.service("NetworkManager").is_running and host.service("NetworkManager").is_enabled
    # No Bluetooth adapter in a test host: enabled, and skipped by its ConditionPathIsDirectory=.
    assert host.service("bluetooth").is_enabled
    assert not host.service("bluetooth").is_running
    assert not host.service("cups").is_running
