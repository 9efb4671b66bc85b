# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""examples/execution-environment through ansible-builder, as far as this machine allows.

`ansible-builder create` writes the build context (a Containerfile and _build/). Building the image
needs podman or docker and the base image from quay.io, which this machine cannot pull, so the image
is not built here. What the build would install for the collection is decided inside it by
`ansible-builder introspect` on the installed collections; that step is run here on the collection
as it is built and installed, so the dependencies it finds are the ones an image would get.
"""

import os
import shutil
import subprocess

import pytest
from fleet import REPO_ROOT, ansible_command

DEFINITION = os.path.join(REPO_ROOT, "examples", "execution-environment")


@pytest.fixture(scope="module")
def installed_collection(collection_tarball, tmp_path_factory):
    """The collection installed as the image's `ansible-galaxy collection install` leaves it."""
    collections = tmp_path_factory.mktemp("ee") / "collections"
    subprocess.run([ansible_command("ansible-galaxy"), "collection", "install", "-p", str(collections), str(collection_tarball)],
                   env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}, check=True, capture_output=True)
    return collections


def test_create_writes_a_context_that_installs_the_collection_ansible_core_and_runner(tmp_path):
    shutil.copytree(DEFINITION, tmp_path / "definition")
    context = tmp_path / "context"
    subprocess.run([ansible_command("ansible-builder"), "create", "--file", str(tmp_path / "definition" / "execution-environment.yml"),
                    "--context", str(context), "--output-filename", "Containerfile"], check=True, capture_output=True)
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner==2.4.3"' in containerfile
    assert "ansible-galaxy collection install" in containerfile
    # The builder stage introspects the installed collections: that is where meta/execution-environment.yml counts.
    assert "introspect" in containerfile
    assert "opdbus.fleet" in (context / "_build" / "requirements.yml").read_text()


def test_the_builds_introspection_finds_the_collections_python_and_system_dependencies(installed_collection, tmp_path):
    pip, bindep = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    subprocess.run([ansible_command("ansible-builder"), "introspect", str(installed_collection),
                    "--write-pip", str(pip), "--write-bindep", str(bindep)], check=True, capture_output=True)
    python_lines = [line for line in pip.read_text().splitlines() if not line.startswith("#")]
    system_lines = [line for line in bindep.read_text().splitlines() if not line.startswith("#")]
    assert any(line.startswith("jmespath>=1.0") and "opdbus.fleet" in line for line in python_lines), python_lines
    assert any(line.startswith("zstandard>=0.19") and "opdbus.fleet" in line for line in python_lines), python_lines
    assert any(line.startswith("openssh-clients [platform:rpm]") for line in system_lines), system_lines
    assert any(line.startswith("openssh-client [platform:dpkg]") for line in system_lines), system_lines
