# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs that carry their constraints, and the option pieces the modules share.

Each piece matches a doc fragment of the same name in plugins/doc_fragments, so a module that takes
a piece's options extends that fragment and declares neither the options nor their constraints.
"""

from __future__ import annotations


class ArgumentSpec:
    """Options with the constraints between them; ``merge`` combines pieces into a module's spec."""

    def __init__(self, options=None, mutually_exclusive=(), required_one_of=(), required_if=()):
        self.options = dict(options or {})
        self.mutually_exclusive = list(mutually_exclusive)
        self.required_one_of = list(required_one_of)
        self.required_if = list(required_if)

    def merge(self, *others):
        """A new spec with the options and constraints of this one and OTHERS (an option twice is a bug)."""
        merged = ArgumentSpec(self.options, self.mutually_exclusive, self.required_one_of, self.required_if)
        for other in others:
            clash = set(merged.options) & set(other.options)
            if clash:
                raise ValueError(f"options declared twice: {', '.join(sorted(clash))}")
            merged.options.update(other.options)
            merged.mutually_exclusive += other.mutually_exclusive
            merged.required_one_of += other.required_one_of
            merged.required_if += other.required_if
        return merged

    def defaults(self):
        """``{option: default}``: the parameters a caller that is not a module (the host command) starts from."""
        return {name: option.get("default") for name, option in self.options.items()}

    def module_kwargs(self):
        """Keyword arguments for AnsibleModule (every opdbus.fleet module supports check mode)."""
        return dict(argument_spec=self.options, mutually_exclusive=self.mutually_exclusive,
                    required_one_of=self.required_one_of, required_if=self.required_if, supports_check_mode=True)


def document_spec(required=False):
    """The opdbus.fleet.state_document fragment: a desired state given inline or as a file on the host."""
    return ArgumentSpec(dict(state=dict(type="dict"), src=dict(type="path")), mutually_exclusive=[("state", "src")],
                        required_one_of=[("state", "src")] if required else ())


def scope_spec():
    """The opdbus.fleet.systemd fragment."""
    return ArgumentSpec(dict(scope=dict(type="str", choices=["system", "user"], default="system")))


def ledger_spec():
    """The opdbus.fleet.ledger fragment."""
    return ArgumentSpec(dict(ledger_path=dict(type="path"), lock_timeout=dict(type="int", default=120)))


def job_timeout_spec():
    """Seconds to wait for systemd jobs (part of the opdbus.fleet.apply fragment)."""
    return ArgumentSpec(dict(job_timeout=dict(type="int", default=90)))


def apply_spec():
    """The opdbus.fleet.apply and opdbus.fleet.ledger fragments: where an apply writes, and how long it waits."""
    return ledger_spec().merge(job_timeout_spec(), ArgumentSpec(dict(state_file=dict(type="path"))))


def query_spec():
    """The opdbus.fleet.query fragment: a JMESPath expression over the module's result."""
    return ArgumentSpec(dict(query=dict(type="str")))
