# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""End to end: the role's nginx serves the menu; a UEFI VM with an empty disk and a decoy boots it with
iPXE, takes the laptop entry, installs itself and boots from its own disk.

The VM is on QEMU's user network, where the controller is 10.0.2.2: the role's nginx listens on the
controller's loopback, and the VM's SSH port is forwarded to it. The phases print their times."""

import json
import os
import re
import subprocess

import pytest
from conftest import REPO_ROOT, Phases, sha256_of
from fleet import ansible_command, ansible_environment, booted_fleet, ensure_netboot_images, run

HTTP_PORT = 18080
SSH_PORT = 12222
SERVER_URL = f"http://10.0.2.2:{HTTP_PORT}"
WEB_ROOT = "/srv/opdbus-netboot-test"
NGINX_CONF = "/etc/nginx/conf.d/opdbus-netboot.conf"
ACCESS_LOG = "/var/log/nginx/opdbus-netboot.access.log"
TARGET_SERIAL, DECOY_SERIAL = "opdbus-target", "opdbus-decoy"
BOOT_TIMEOUT = 600


def playbook(fleet, name, extra_vars, check=False):
    vars_file = os.path.join(fleet.run_dir, f"{name}.vars.json")
    with open(vars_file, "w") as handle:
        json.dump(extra_vars, handle)
    argv = [ansible_command("ansible-playbook"), "-i", fleet.inventory_file, os.path.join(REPO_ROOT, "tests/netboot", name),
            "-e", f"@{vars_file}"] + (["--check"] if check else [])
    result = subprocess.run(argv, env=ansible_environment(), capture_output=True, text=True, check=False)
    recap = result.stdout[result.stdout.rfind("PLAY RECAP"):]
    return result.returncode, result.stdout, recap


def stop_nginx_site():
    subprocess.run(["service", "nginx", "stop"], capture_output=True, check=False)
    for path in (NGINX_CONF, ACCESS_LOG):
        if os.path.exists(path):
            os.unlink(path)
    subprocess.run(["rm", "-rf", WEB_ROOT], check=True)


@pytest.fixture(scope="module")
def netbooted():
    phases = Phases("netboot e2e")
    stop_nginx_site()
    with booted_fleet(os.environ.get("OPDBUS_NETBOOT_FLEET", "nbe2e"), 0) as fleet:
        try:
            images = ensure_netboot_images()
            phases.done("installer images")
            key = open(fleet.key_file + ".pub").read().strip()
            server_vars = {"netboot_install_authorized_keys": [key], "netboot_install_server_url": SERVER_URL,
                           "netboot_install_listen": f"127.0.0.1:{HTTP_PORT}", "netboot_install_root": WEB_ROOT,
                           "netboot_install_images_dir": images, "netboot_install_menu_timeout": 2,
                           "netboot_install_kernel_options": "console=ttyS0"}
            first = playbook(fleet, "server.yml", server_vars)
            assert first[0] == 0, first[1]
            second = playbook(fleet, "server.yml", server_vars)
            assert second[0] == 0 and "changed=0" in second[2], second[1]
            phases.done("server side (nginx, menu, images) applied twice")
            target, decoy = os.path.join(fleet.vm_dir, "target.img"), os.path.join(fleet.vm_dir, "decoy.img")
            os.makedirs(fleet.vm_dir, exist_ok=True)
            run(["truncate", "-s", "4G", target])
            run(["truncate", "-s", "3G", decoy])
            run(["mkfs.ext4", "-q", "-L", "precious", decoy])
            decoy_before = sha256_of(decoy)
            fleet.start_netboot_vm("installer", [(target, TARGET_SERIAL), (decoy, DECOY_SERIAL)],
                                   f"{SERVER_URL}/menu.ipxe", SSH_PORT)
            fleet.wait_for_ssh("installer", BOOT_TIMEOUT)
            phases.done("firmware, iPXE menu, installer over HTTP, live system up")
            live_cmdline = fleet.ssh("installer", "cat /proc/cmdline").stdout
            decoy_refused = fleet.run_module("installer", "opdbus.fleet.opdbus_install", {
                "disk": f"/dev/disk/by-id/virtio-{DECOY_SERIAL}", "confirm": TARGET_SERIAL, "authorized_keys": [key]})
            phases.done("decoy refused")
            install_vars = {"netboot_install_authorized_keys": [key], "netboot_install_hostname": "laptop-e2e",
                            "netboot_install_disk": f"/dev/disk/by-id/virtio-{TARGET_SERIAL}",
                            "netboot_install_confirm": TARGET_SERIAL, "netboot_install_kernel_options": "console=ttyS0"}
            installed = playbook(fleet, "install.yml", install_vars)
            assert installed[0] == 0, installed[1][-6000:]
            fleet.wait_for_ssh("installer", BOOT_TIMEOUT)
            phases.done("profile applied, installed, rebooted from its own disk")
            yield {"fleet": fleet, "live_cmdline": live_cmdline, "decoy_refused": decoy_refused, "decoy": decoy,
                   "decoy_before": decoy_before, "install_output": installed[1], "access_log": open(ACCESS_LOG).read()}
        finally:
            stop_nginx_site()


def test_the_menu_kernel_and_installer_came_from_nginx_and_the_laptop_entry_was_taken(netbooted):
    log = netbooted["access_log"]
    for path in ("/menu.ipxe", "/opdbus/vmlinuz", "/opdbus/installer.img", "/opdbus/authorized_keys", "/opdbus/SHA256SUMS"):
        assert re.search(rf'"GET {re.escape(path)} HTTP/1\.[01]" 200 ', log), f"{path} not served:\n{log}"
    assert log.count("GET /menu.ipxe ") == 1, "the VM netbooted more than once: it did not boot from its own disk"
    assert "opdbus.profile=laptop" in netbooted["live_cmdline"]


def test_the_unconfirmed_decoy_was_refused_and_is_byte_identical(netbooted):
    refused = netbooted["decoy_refused"]
    assert refused.get("failed") and "MODULE FAILURE" not in refused["msg"], refused
    assert "is not confirmed" in refused["msg"] and "holds data (ext4" in refused["msg"], refused["msg"]
    assert sha256_of(netbooted["decoy"]) == netbooted["decoy_before"]


def test_it_booted_its_installed_kernel_from_the_btrfs_root_subvolume(netbooted):
    fleet = netbooted["fleet"]
    cmdline = fleet.ssh("installer", "cat /proc/cmdline").stdout
    assert "rootflags=subvol=@root" in cmdline and "opdbus.keys" not in cmdline, cmdline
    root = json.loads(fleet.ssh("installer", "findmnt -J -o SOURCE,FSTYPE /").stdout)["filesystems"][0]
    assert root["fstype"] == "btrfs" and root["source"].startswith("/dev/vda2"), root
    assert fleet.ssh("installer", "hostname").stdout.strip() == "laptop-e2e"


def test_findmnt_shows_the_six_subvolumes_with_their_options(netbooted):
    fleet = netbooted["fleet"]
    mounts = json.loads(fleet.ssh("installer", "findmnt -J -t btrfs -o TARGET,SOURCE,OPTIONS").stdout)
    found = {}

    def walk(nodes):
        for node in nodes:
            found[node["target"]] = node
            walk(node.get("children", []))
    walk(mounts["filesystems"])
    print("\ninstalled system's BTRFS mounts (findmnt):")
    for target, node in sorted(found.items()):
        print(f"  {target:28} {node['source']:28} {node['options']}")
    expected = {"/": "@root", "/var/lib/op-dbus/cache": "@cache", "/var/lib/op-dbus/timing": "@timing",
                "/var/lib/op-dbus/vectors": "@vectors", "/var/lib/op-dbus/state": "@state",
                "/var/lib/op-dbus/snapshots": "@snapshots"}
    for target, subvolume in expected.items():
        options = found[target]["options"].split(",")
        assert f"subvol=/{subvolume}" in options and "noatime" in options and "compress=zstd:1" in options, found[target]
    properties = fleet.ssh("installer", "btrfs property get /var/lib/op-dbus/cache compression").stdout.strip()
    assert properties == "compression=zstd"


def test_the_laptop_profile_holds_and_the_ledger_starts_with_the_install_and_verifies(netbooted):
    fleet = netbooted["fleet"]
    check = fleet.ssh("installer", "opdbus apply --check", check=False)
    assert check.returncode == 0 and "nothing to do" in (check.stdout + check.stderr).lower(), check.stdout + check.stderr
    verify = fleet.ssh("installer", "opdbus ledger verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    first = json.loads(fleet.ssh("installer", "head -1 /var/lib/op-dbus/blockchain/ledger.jsonl").stdout)
    assert first["action"] == "install" and first["seq"] == 0
    assert first["changes"]["disk"]["serial"] == TARGET_SERIAL and first["changes"]["profile"] == "laptop"
    assert {"vmlinuz", "installer.img", "initrd.img", "installed vmlinuz"} <= set(first["changes"]["images"])
    assert fleet.ssh("installer", "systemctl is-active op-dbus.service NetworkManager.service").stdout.split() == ["active", "active"]


def test_password_login_is_refused(netbooted):
    attempt = subprocess.run(["ssh", "-p", str(SSH_PORT), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
                              "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "root@127.0.0.1", "true"],
                             capture_output=True, text=True, check=False)
    assert attempt.returncode == 255 and "Permission denied (publickey)" in attempt.stderr, attempt.stderr
