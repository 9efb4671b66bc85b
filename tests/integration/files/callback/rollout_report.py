# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writes each host's results by task name, and the recap, to $ROLLOUT_REPORT as JSON, for the tests to read.

ansible-core no longer ships a JSON callback (it moved to ansible.posix, which the tests do not install).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_report
type: notification
short_description: Write per-host task results and the recap to the JSON file ROLLOUT_REPORT
description:
  - For the integration tests only.
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "rollout_report"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self):
        super().__init__()
        self.results = {}

    def _record(self, result, **extra):
        fields = dict(result._result, **extra)
        self.results.setdefault(result._host.get_name(), {})[result._task.get_name()] = fields

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        recap = {host: stats.summarize(host) for host in sorted(stats.processed)}
        with open(os.environ["ROLLOUT_REPORT"], "w", encoding="utf-8") as handle:
            json.dump({"results": self.results, "stats": recap}, handle, default=str)
