#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: btrfs_info
short_description: Describe a mounted BTRFS filesystem and its subvolumes
version_added: 0.1.0
description:
  - Returns the filesystem that a path is on (UUID, label, devices, default subvolume) and every
    subvolume in it with its ID, path, UUIDs, read-only flag, generation and where it is mounted.
  - Uses the C(btrfs) command of btrfs-progs, which must be installed on the target.
author:
  - opdbus.fleet developers (@opdbus)
options:
  path:
    description:
      - Any existing path in a mounted BTRFS filesystem, for example its mount point.
    type: path
    required: true
attributes:
  check_mode:
    support: full
    description: Only reads; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to show.
notes:
  - Subvolume paths are paths inside the filesystem (C(/) is the top level), the same whichever
    subvolume is mounted where; C(mountpoints) tells where each one is mounted in the mount namespace
    the module runs in.
seealso:
  - module: opdbus.fleet.btrfs_subvolume
"""

EXAMPLES = r"""
- name: Read the pool's layout
  opdbus.fleet.btrfs_info:
    path: /mnt/pool
  register: pool

- name: List the read-only snapshots
  ansible.builtin.debug:
    msg: "{{ pool.subvolumes | selectattr('read_only') | map(attribute='path') | list }}"
"""

RETURN = r"""
filesystem:
  description: The filesystem O(path) is on.
  returned: always
  type: dict
  contains:
    uuid:
      description: The filesystem's UUID.
      type: str
      returned: always
    label:
      description: The filesystem's label; V(null) when it has none.
      type: str
      returned: always
    devices:
      description: Paths of the filesystem's devices, as the kernel knows them (a container may not have them).
      type: list
      elements: str
      returned: always
    default_subvolume:
      description: ID and path (inside the filesystem) of the default subvolume.
      type: dict
      returned: always
  sample:
    uuid: c5017874-e1c9-40c3-a17a-86bdd494c7e6
    label: pool
    devices: [/dev/vdb]
    default_subvolume: {id: 5, path: /}
subvolumes:
  description: Every subvolume of the filesystem except the top level (ID 5), in ID order.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Subvolume ID.
      type: int
      returned: always
    path:
      description: Path inside the filesystem.
      type: str
      returned: always
    parent_id:
      description: ID of the subvolume it is nested in.
      type: int
      returned: always
    uuid:
      description:
        - The subvolume's UUID. It also has C(parent_uuid), C(received_uuid) and C(generation), as
          in RV(opdbus.fleet.btrfs_subvolume#module:subvolume).
      type: str
      returned: always
    read_only:
      description: Whether it is read-only.
      type: bool
      returned: always
    mountpoints:
      description: Where it is mounted (its root, not a directory in it).
      type: list
      elements: str
      returned: always
  sample:
    - id: 256
      path: /@root
      parent_id: 5
      uuid: aae53547-1708-8244-a042-cec93f810ca8
      parent_uuid: null
      received_uuid: null
      generation: 812
      read_only: false
      mountpoints: [/]
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.info import info_task
from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module


def main():
    run_module(ArgumentSpec(dict(path=dict(type="path", required=True))), info_task)


if __name__ == "__main__":
    main()
