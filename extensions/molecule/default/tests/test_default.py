# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scenario's hosts are real systemd machines with what the collection's modules need."""


def test_systemd_is_pid_1_and_the_system_is_running(host):
    assert host.check_output("ps -p 1 -o comm=") == "systemd"
    assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")


def test_system_bus_is_up(host):
    assert host.service("dbus").is_running


def test_target_side_python_libraries_import(host):
    host.run_test("/usr/bin/python3 -c 'import dbus, zstandard, jmespath'")
