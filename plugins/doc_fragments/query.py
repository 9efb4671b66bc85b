# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The query option of the info modules (argument spec: query_spec in module_utils/_common/argspec.py).
    DOCUMENTATION = r"""
options:
  query:
    description:
      - A JMESPath expression evaluated on the host over the module's result (its return values
        other than C(changed) and C(query_result)); the answer is returned as C(query_result), so
        only the answer has to travel back to the controller.
      - Requires jmespath on the host (C(python3-jmespath)). An expression that is not valid JMESPath
        fails the task.
    type: str
"""
