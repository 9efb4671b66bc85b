# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument-spec pieces shared by the modules, one per doc fragment, and what they build."""

from __future__ import annotations

from ansible_collections.opdbus.fleet.plugins.module_utils.apply_engine import (
    StateApplier, default_paths, load_document)
from ansible_collections.opdbus.fleet.plugins.module_utils.ledger import DEFAULT_LEDGER_DIR, Ledger
from ansible_collections.opdbus.fleet.plugins.module_utils.systemd import SystemdClient


def document_argument_spec():
    """Options of the opdbus.fleet.state_document doc fragment."""
    return dict(state=dict(type="dict"), src=dict(type="path"))


def scope_argument_spec():
    """Options of the opdbus.fleet.systemd doc fragment."""
    return dict(scope=dict(type="str", choices=["system", "user"], default="system"))


def ledger_argument_spec():
    """Options of the opdbus.fleet.ledger doc fragment."""
    return dict(ledger_path=dict(type="path"), lock_timeout=dict(type="int", default=120))


def apply_argument_spec():
    """Options of the opdbus.fleet.apply and opdbus.fleet.ledger doc fragments."""
    return dict(ledger_argument_spec(), state_file=dict(type="path"), job_timeout=dict(type="int", default=90))


def ledger_from_params(params):
    """The Ledger named by ``ledger_path`` (default: the system ledger), and the lock timeout to use."""
    return Ledger(params["ledger_path"] or DEFAULT_LEDGER_DIR), params["lock_timeout"]


def document_from_params(params):
    """The desired state document named by the module's ``state`` or ``src`` option."""
    if params["state"] is not None:
        return params["state"]
    return load_document(params["src"])


def build_applier(params):
    """The StateApplier for the module's scope, ledger and state file options (may raise SystemdError)."""
    default_state_file, default_ledger = default_paths(params["scope"])
    return StateApplier(SystemdClient(params["scope"]), params["ledger_path"] or default_ledger,
                        state_file=params["state_file"] or default_state_file, job_timeout=params["job_timeout"],
                        lock_timeout=params["lock_timeout"])
