# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument-spec pieces and result helpers shared by the modules (one definition each)."""

from __future__ import annotations

from ansible_collections.opdbus.fleet.plugins.module_utils.apply_engine import load_document


def document_argument_spec():
    """Options of the opdbus.fleet.state_document doc fragment."""
    return dict(
        state=dict(type="dict"),
        src=dict(type="path"),
        scope=dict(type="str", choices=["system", "user"], default="system"),
    )


def document_from_params(params):
    """The desired state document named by the module's ``state`` or ``src`` option."""
    if params["state"] is not None:
        return params["state"]
    return load_document(params["src"])
