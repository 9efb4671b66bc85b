# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: state_document_problems
short_description: The problems of a desired state document, found on the controller
version_added: 0.2.0
description:
  - Checks a desired state document with the same validator M(opdbus.fleet.opdbus_state) runs on the
    host, and returns its problems, each naming the exact path (an empty list for a valid document).
  - Runs on the controller, so a role can refuse a bad declaration before it changes anything on a host,
    including before it installs the libraries the modules need there.
  - Whether a unit exists, and what systemd would refuse, can only be known on the host.
author:
  - opdbus.fleet developers (@opdbus)
options:
  _input:
    description: "The document, C({version: 1, plugins: {systemd: {units: ...}}})."
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse a bad declaration before anything changes
  ansible.builtin.assert:
    that: document | opdbus.fleet.state_document_problems == []
    fail_msg: "{{ document | opdbus.fleet.state_document_problems | join('; ') }}"
"""

RETURN = r"""
_value:
  description: "The problems, as C(path: message) strings; empty when the document is valid."
  type: list
  elements: str
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._state.document import StateDocumentError, validate


def state_document_problems(document):
    try:
        validate(document)
    except StateDocumentError as error:
        return list(error.problems)
    return []


class FilterModule:
    def filters(self):
        return {"state_document_problems": state_document_problems}
