# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's op-dbus settings, ``/etc/op-dbus/config.json``, written by the opdbus.fleet.base role.

The host command reads its defaults from it (retention, the NUMA strategy), so ``opdbus snapshot
--prune`` run by the snapshot timer keeps what the profile declares, and an administrator typing the
command gets the same. Every key is optional; a missing file means the built-in defaults.
"""

from __future__ import annotations

import json

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError, host_file_error
from ansible_collections.opdbus.fleet.plugins.module_utils._common.files import read_text

CONFIG_FILE = "/etc/op-dbus/config.json"
KEYS = ("state_file", "ledger_path", "retention", "numa_strategy", "numa_node", "snapshot_interval")


class ConfigError(OpdbusError):
    """A config file that cannot be used; the message names the file and the key."""


def load_config(path=CONFIG_FILE):
    """The settings in PATH as a dict with every key of KEYS (None where unset)."""
    try:
        text = read_text(path)
    except OSError as error:
        raise host_file_error("read", path, error) from None
    settings = {}
    if text is not None:
        try:
            settings = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"{path} is not JSON: {error}") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        unknown = sorted(set(settings) - set(KEYS))
        if unknown:
            raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if settings.get("retention") is not None and not isinstance(settings["retention"], dict):
        raise ConfigError(f"{path}: retention must be an object such as {{\"hourly\": 5, \"daily\": 3}}")
    return {key: settings.get(key) for key in KEYS}
