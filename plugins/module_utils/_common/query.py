# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``query`` option of the info modules: JMESPath evaluated on the host, so only the answer travels."""

from __future__ import annotations

from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError

try:
    import jmespath
except ImportError:
    jmespath = None


class QueryError(OpdbusError):
    """A query that cannot be answered: jmespath is missing, or the expression is not valid."""


def evaluate(expression, data):
    """The answer to the JMESPath EXPRESSION over DATA.

    The expression sees a copy of DATA's top level: the answer goes back into DATA as
    ``query_result``, and an answer that is DATA itself (``@``) would make the result contain
    itself, which no JSON can hold (ansible-core's output scrubbing then never ends).
    """
    if jmespath is None:
        raise QueryError("jmespath is needed for a query: install python3-jmespath on the host, or leave query unset")
    try:
        return jmespath.search(expression, dict(data))
    except jmespath.exceptions.JMESPathError as error:
        raise QueryError(f"query {expression!r} is not a valid JMESPath expression: {error}") from None
