# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What systemd reports about units, as plain data: their states and the facts that decide a job.

Apart from the D-Bus client so that documents, planning and snapshots can use it without dbus-python.
"""

from __future__ import annotations


# Unit file states that mean "starts when its dependencies ask for it" (what `systemctl is-enabled`
# reports success for) versus states that `enabled: false` can reach.
ENABLED_STATES = frozenset(("enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient"))
MASKED_STATES = frozenset(("masked", "masked-runtime"))

# States an install-less unit is in: nothing to enable or disable.
UNCHANGEABLE_STATES = frozenset(("static", "alias", "generated", "transient"))
RUNNING_STATES = frozenset(("active", "reloading", "activating"))

# Load states in which systemd refuses to start a unit until its file is fixed.
BROKEN_LOAD_STATES = frozenset(("error", "bad-setting"))

# Unit types that only exist while something else creates them: never part of a restorable snapshot.
RUNTIME_UNIT_TYPES = ("scope", "slice", "device")

# Unit file states of units a snapshot cannot restore: made at runtime or by a generator, an alias
# of another unit (which the snapshot holds under its own name), or a file systemd cannot parse.
UNRESTORABLE_FILE_STATES = frozenset(("", "generated", "transient", "alias", "bad"))

# Where `systemctl mask` (MaskUnitFiles) writes its /dev/null symlink, per scope.
SYSTEM_CONFIG_DIR = "/etc/systemd/system"


class UnitStatus:
    """What systemd reports about one unit; ``snapshot()`` expresses it as a desired-state entry."""

    __slots__ = ("name", "load_state", "active_state", "sub_state", "unit_file_state", "object_path",
                 "need_daemon_reload", "job_facts", "own_file")

    def __init__(self, name, load_state, active_state, sub_state, object_path, unit_file_state="",
                 need_daemon_reload=False):
        self.name = name
        self.load_state = load_state
        self.active_state = active_state
        self.sub_state = sub_state
        self.object_path = object_path
        self.unit_file_state = unit_file_state
        self.need_daemon_reload = need_daemon_reload
        # Filled only for units a plan starts or stops (fill_job_facts) or masks (fill_own_files).
        self.job_facts = None
        self.own_file = None

    @property
    def exists(self):
        return self.load_state != "not-found" or self.masked

    @property
    def masked(self):
        return self.load_state == "masked" or self.unit_file_state in MASKED_STATES

    @property
    def enabled(self):
        """True or False; None when the unit has no unit file state (e.g. it does not exist)."""
        if self.masked:
            return False
        if not self.unit_file_state:
            return None
        return self.unit_file_state in ENABLED_STATES

    @property
    def running(self):
        return self.active_state in RUNNING_STATES

    @property
    def unmet_conditions(self):
        """The Condition*= settings systemd found unmet when it last tried to start the unit, or []."""
        facts = self.job_facts
        if not facts or facts.condition_result or not facts.condition_checked:
            return []
        return facts.unmet or ["a start condition (see systemctl status %s)" % self.name]

    def snapshot(self):
        """The unit's state as an entry of a desired-state document (so a snapshot can be applied)."""
        entry = {"active_state": "active" if self.running else "inactive", "masked": self.masked}
        if self.enabled is not None:
            entry["enabled"] = self.enabled
        return entry

    def as_dict(self):
        return {
            "load_state": self.load_state,
            "active_state": self.active_state,
            "sub_state": self.sub_state,
            "unit_file_state": self.unit_file_state,
            "enabled": self.enabled,
            "masked": self.masked,
        }


class JobFacts:
    """What decides whether systemd would start or stop a unit: its start conditions as last
    evaluated, and its RefuseManualStart=/RefuseManualStop= settings."""

    __slots__ = ("condition_result", "condition_checked", "unmet", "refuse_start", "refuse_stop")

    def __init__(self, condition_result, condition_checked, unmet, refuse_start, refuse_stop):
        self.condition_result = condition_result
        self.condition_checked = condition_checked
        self.unmet = unmet
        self.refuse_start = refuse_start
        self.refuse_stop = refuse_stop
