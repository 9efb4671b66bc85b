# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of option values that argument specs cannot express, shared by every task."""

from __future__ import annotations

import os

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError


def require_absolute(params, *options):
    """Refuse a relative path in OPTIONS: it would land wherever the module happens to run."""
    for option in options:
        if params[option] and not os.path.isabs(params[option]):
            raise OpdbusError(f"{option}: {params[option]!r} is not an absolute path")


def seconds(params, option, minimum):
    """The value of a time-out OPTION, refused (before anything is done) when below MINIMUM."""
    if params[option] < minimum:
        raise OpdbusError(f"{option} must be {minimum} or more seconds, not {params[option]}")
    return params[option]
