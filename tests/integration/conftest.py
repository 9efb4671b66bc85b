# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration tests run against a fleet of real systemd hosts booted by tests/fleet/fleet.py."""

import os
import subprocess
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS_DIR, "fleet"))

from fleet import REPO_ROOT, ansible_command, ansible_environment, booted_fleet  # noqa: E402  (path set up just above)

FLEET_HOSTS = 3
BOOT_TIMES = []  # reported after the run: pytest captures what fixtures print
FILE_SECONDS = {}  # test file -> seconds of setup, calls and teardown, fleets booted by its fixtures included


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    FILE_SECONDS[path] = FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    for seconds in BOOT_TIMES:
        terminalreporter.write_line(f"test fleet: {FLEET_HOSTS} hosts booted from the cached root filesystem in {seconds} s")
    for path, seconds in FILE_SECONDS.items():
        terminalreporter.write_line(f"{seconds:7.1f} s  {path}")


@pytest.fixture(scope="session", autouse=True)
def requires_root():
    if os.geteuid() != 0:
        pytest.fail("integration tests boot systemd-nspawn hosts and need root; run `make integration` as root")


@pytest.fixture(scope="session")
def fleet():
    # A distinct name per concurrent run (e.g. two developers' test sessions on one machine).
    with booted_fleet(os.environ.get("OPDBUS_FLEET_NAME", "itest"), FLEET_HOSTS, btrfs=["node1"]) as test_fleet:
        BOOT_TIMES.append(test_fleet.state()["boot_seconds"])
        yield test_fleet


@pytest.fixture(scope="session")
def collection_tarball(tmp_path_factory):
    """The collection as Galaxy or a private Automation Hub would serve it: `ansible-galaxy collection build`."""
    output = tmp_path_factory.mktemp("collection")
    subprocess.run([ansible_command("ansible-galaxy"), "collection", "build", "--output-path", str(output), REPO_ROOT],
                   check=True, capture_output=True)
    (tarball,) = output.glob("opdbus-fleet-*.tar.gz")
    return tarball


@pytest.fixture(scope="session")
def ansible(fleet):
    """Run an ansible or ansible-playbook command line against the fleet's inventory."""

    def run(program, *args, check=True):
        argv = [ansible_command(program), "-i", fleet.inventory_file, *args]
        result = subprocess.run(argv, env=ansible_environment(), stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=900, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    return run
