# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module layer: the only code of the collection that imports ansible-core.

Every module's ``main()`` is one ``run_module`` call: its argument spec, the task (a function of the
core taking ``(params, check_mode, context)`` and returning the result), and the libraries it needs
on the host. Errors of the core (OpdbusError and its subclasses) become ``fail_json`` here and
nowhere else.
"""

from __future__ import annotations

import importlib
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.respawn import has_respawned, probe_interpreters_for_module, respawn_module
from ansible_collections.opdbus.fleet.plugins.module_utils._common.context import TaskContext
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError
from ansible_collections.opdbus.fleet.plugins.module_utils._common.query import evaluate

# Where distributions install the Python that has their python3-dbus package.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/libexec/platform-python", "/usr/bin/python")
# import name: (library, what for, how to install it)
LIBRARIES = {
    "dbus": ("dbus-python", "to talk to systemd over D-Bus",
             "On Debian and Ubuntu install python3-dbus; on Fedora and RHEL python3-dbus."),
    "zstandard": ("zstandard", "to store snapshots", "Install python3-zstandard on the managed host."),
    "jmespath": ("jmespath", "for the query option",
                 "Install python3-jmespath on the managed host, or leave query unset."),
}
# Libraries a module can re-run itself under the system Python for (distribution packages).
RESPAWNABLE = ("dbus",)


def require_library(module, name):
    """Fail the task unless library NAME imports; for dbus-python, first re-run under the system Python
    that has the distribution's package, as ansible.builtin.dnf does for python3-dnf."""
    try:
        importlib.import_module(name)
        return
    except ImportError:
        error = traceback.format_exc()
    if name in RESPAWNABLE and not has_respawned():
        interpreter = probe_interpreters_for_module(SYSTEM_PYTHONS, name)
        if interpreter:
            respawn_module(interpreter)
    library, reason, install = LIBRARIES[name]
    module.fail_json(msg=missing_required_lib(library, reason=reason) + " " + install, exception=error)


def module_context(module):
    """The TaskContext of a module run: its warnings, run_command and get_bin_path."""
    def run(argv, environ=None, data=None):
        return module.run_command(argv, environ_update=environ, data=data, binary_data=True)

    return TaskContext(warn=module.warn, run=run, find=module.get_bin_path)


def run_module(spec, task, needs=(), timed=False):
    """Run TASK as a module with argument spec SPEC (an ArgumentSpec) and exit with its result.

    NEEDS names the libraries the task imports (keys of LIBRARIES); jmespath is needed when a
    ``query`` is given, and the query is answered over the result (without ``changed``). TIMED adds
    ``timing.total_ms``, also to a failed result.
    """
    started = time.monotonic()
    module = AnsibleModule(**spec.module_kwargs())
    query = module.params.get("query")
    for name in tuple(needs) + (("jmespath",) if query is not None else ()):
        require_library(module, name)
    timing = (lambda: {"timing": {"total_ms": round((time.monotonic() - started) * 1000, 1)}}) if timed else dict
    try:
        result = task(module.params, module.check_mode, module_context(module))
        if query is not None:
            result["query_result"] = evaluate(query, result)
    except OpdbusError as error:
        module.fail_json(msg=str(error), **dict(error.details, **timing()))
    result.setdefault("changed", False)
    module.exit_json(**result, **timing())
