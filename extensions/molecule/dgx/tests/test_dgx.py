# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After converge on a one-node host without GPUs: the DGX profile declares and places no GPU service."""

import json


def test_no_gpu_service_is_declared_or_placed_on_a_host_without_them(host):
    units = json.loads(host.file("/etc/op-dbus/state.json").content_string)["plugins"]["systemd"]["units"]
    assert not [name for name in units if name.startswith("nvidia-")]
    assert not host.run("ls /etc/systemd/system/*.d/50-opdbus-numa.conf").stdout.strip()
