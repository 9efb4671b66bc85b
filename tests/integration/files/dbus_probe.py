# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run on a test host (python3 - ARGS < this file): talk to the host's systemd over its system bus.

Deliberately independent of the collection's own D-Bus client, so the smoke test proves the fleet
and not our code. Prints one JSON document.

  read UNIT...            ActiveState, SubState, UnitFileState of each unit
  cycle UNIT              daemon-reload, start and stop UNIT, reporting the state after each step
"""

import json
import sys
import time

import dbus

bus = dbus.SystemBus()
manager = dbus.Interface(bus.get_object("org.freedesktop.systemd1", "/org/freedesktop/systemd1"),
                         "org.freedesktop.systemd1.Manager")


def unit_state(name):
    # LoadUnit, unlike GetUnit, also answers for units that are not loaded (stopped, never started).
    path = manager.LoadUnit(name)
    properties = dbus.Interface(bus.get_object("org.freedesktop.systemd1", path), "org.freedesktop.DBus.Properties")
    return {key: str(properties.Get("org.freedesktop.systemd1.Unit", key))
            for key in ("ActiveState", "SubState", "UnitFileState", "LoadState")}


def wait_for_job(job_path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if str(job_path) not in [str(job[4]) for job in manager.ListJobs()]:
            return
        time.sleep(0.05)
    raise SystemExit(f"job {job_path} did not finish in {timeout} s")


def main():
    command, units = sys.argv[1], sys.argv[2:]
    if command == "read":
        print(json.dumps({unit: unit_state(unit) for unit in units}))
    elif command == "cycle":
        unit = units[0]
        steps = {}
        manager.Reload()
        steps["after_reload"] = unit_state(unit)
        wait_for_job(manager.StartUnit(unit, "replace"))
        steps["after_start"] = unit_state(unit)
        wait_for_job(manager.StopUnit(unit, "replace"))
        steps["after_stop"] = unit_state(unit)
        print(json.dumps(steps))


main()
