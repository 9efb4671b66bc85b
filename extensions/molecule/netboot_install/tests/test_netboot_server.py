# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fleet host fetches what the server side published, as a netbooting machine and its installer do:
the menu with one entry per profile and a return, the images with their caching headers and the
checksums that match them, the keys the menu names by digest, and the host document."""

import json
import re

import pytest

FETCH = """
import hashlib, json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as reply:
    body = reply.read()
print(json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "cache_control": reply.headers.get("Cache-Control"),
                  "text": body.decode() if len(body) < 65536 else None}))
"""


@pytest.fixture(scope="module")
def server(host):
    variables = host.ansible.get_variables()
    gateway = re.sub(r"\.\d+$", ".1", variables["ansible_host"])
    return f"http://{gateway}:{variables['netboot_port']}", variables


def fetch(host, url):
    result = host.run(f"python3 -c '{FETCH}' {url}")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def test_the_menu_has_an_entry_per_profile_and_a_return_and_is_not_cached(host, server):
    url, _variables = server
    for name in ("menu.ipxe", "custom.ipxe"):
        menu = fetch(host, f"{url}/{name}")
        assert menu["cache_control"] == "no-cache"
        lines = menu["text"].splitlines()
        assert lines[0] == "#!ipxe"
        assert [line.split()[1] for line in lines if line.startswith("item ") and not line.startswith("item --")] == [
            "laptop", "workstation", "dgx", "return"]
        assert "choose --default workstation --timeout 10000 opdbus_choice" in menu["text"]
        assert f"kernel {url}/opdbus/vmlinuz initrd=installer.img opdbus.profile=dgx opdbus.server={url} " in menu["text"]


def test_the_images_are_cached_for_an_hour_and_match_the_published_checksums(host, server):
    url, _variables = server
    sums = dict(reversed(line.split()) for line in fetch(host, f"{url}/opdbus/SHA256SUMS")["text"].splitlines())
    assert set(sums) == {"vmlinuz", "installer.img", "initrd.img", "authorized_keys"}
    for name in ("vmlinuz", "installer.img", "initrd.img"):
        image = fetch(host, f"{url}/opdbus/{name}")
        assert image["cache_control"] == "public, max-age=3600"
        assert image["sha256"] == sums[name], name


def test_the_menu_names_the_published_keys_by_their_digest(host, server):
    url, _variables = server
    keys = fetch(host, f"{url}/opdbus/authorized_keys")
    assert keys["text"].startswith("ssh-ed25519 ")
    assert f"opdbus.keys_sha256={keys['sha256']}" in fetch(host, f"{url}/menu.ipxe")["text"]


def test_the_host_document_is_served_under_its_mac(host, server):
    url, variables = server
    document = json.loads(fetch(host, f"{url}/opdbus/hosts/{variables['netboot_host_mac'].replace(':', '-')}.json")["text"])
    assert document == {"hostname": "laptop-042", "profile": "laptop", "disk": "/dev/disk/by-id/virtio-serial42",
                        "confirm": "serial42"}
