# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``query`` option of the info modules: JMESPath evaluated on the host, so only the answer travels."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    import jmespath
except ImportError:
    jmespath = None
    JMESPATH_IMPORT_ERROR = traceback.format_exc()
else:
    JMESPATH_IMPORT_ERROR = None


def run_query(module, expression, data):
    """Evaluate EXPRESSION over DATA; a missing library or a bad expression fails the task.

    The expression sees a copy of DATA's top level: the answer goes back into DATA as
    ``query_result``, and an answer that is DATA itself (``@``) would make the result contain
    itself, which no JSON can hold (ansible-core's output scrubbing then never ends).
    """
    if jmespath is None:
        module.fail_json(msg=missing_required_lib("jmespath", reason="for the query option")
                         + " Install python3-jmespath on the managed host, or leave query unset.",
                         exception=JMESPATH_IMPORT_ERROR)
    try:
        return jmespath.search(expression, dict(data))
    except jmespath.exceptions.JMESPathError as error:
        module.fail_json(msg=f"query {expression!r} is not a valid JMESPath expression: {error}")
