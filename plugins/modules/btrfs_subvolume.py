#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: btrfs_subvolume
short_description: Manage a BTRFS subvolume or snapshot, its read-only flag, compression and default status
version_added: 0.1.0
description:
  - Creates or deletes a subvolume at a path in a mounted BTRFS filesystem, optionally as a snapshot
    (read-write or read-only) of another subvolume, and manages its read-only flag, its C(compression)
    property and whether it is the filesystem's default subvolume.
  - Every check is made before the first change, so a task that fails for bad input (a path that is
    not on BTRFS, a missing parent, a plain directory in the way, a snapshot source that is not a
    subvolume, deleting the default or a mounted subvolume) changes nothing.
  - Uses the C(btrfs) command of btrfs-progs, which must be installed on the target.
  - A run that changes something is recorded in the ledger as one C(btrfs_subvolume) entry - the
    actions done, the path and the resulting subvolume's C(id), C(uuid) and C(parent_uuid) (with
    O(state=absent), the path, C(id) and C(uuid) of each deleted subvolume), also when a command fails
    part-way. A run that changes nothing, and check mode, record nothing.
author:
  - opdbus.fleet developers (@opdbus)
options:
  path:
    description:
      - Path of the subvolume in a mounted BTRFS filesystem, for example C(/mnt/pool/@cache).
      - Symbolic links above the last component are followed. A symbolic link as the last component
        is not a subvolume, so it is an error, never a way to reach one.
    type: path
    required: true
  state:
    description:
      - V(present) creates the subvolume if it does not exist; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  snapshot_source:
    description:
      - Create O(path) as a snapshot of this subvolume (a path in the same filesystem).
      - If O(path) already exists it must be a snapshot of this source (its parent UUID is the source's
        UUID); it is left as it is, never taken again. To take a new snapshot, delete the old one first.
      - A snapshot copies the source's C(compression) property.
    type: path
  read_only:
    description:
      - Whether the subvolume is read-only. Not managed when omitted.
      - A new read-only snapshot is taken read-only at once (atomically) unless its compression must
        be set first.
    type: bool
  compression:
    description:
      - The subvolume's C(compression) property, inherited by files and directories created in it
        afterwards (existing files keep their compression). Not managed when omitted.
      - V(none) means "do not compress", also when the filesystem is mounted with C(compress=).
      - BTRFS cannot change the property of a read-only subvolume; combine it with O(read_only=false).
    type: str
    choices: [zstd, lzo, zlib, none]
  default:
    description:
      - V(true) makes the subvolume the filesystem's default subvolume (what a mount without
        C(subvol=) mounts); V(false) makes the top-level subvolume the default again if this one is it.
      - Not managed when omitted.
    type: bool
  recursive:
    description:
      - With O(state=present), create missing parent directories of O(path) as subvolumes (without it
        a missing parent is an error).
      - With O(state=absent), delete the subvolumes nested in O(path) as well, deepest first (without
        it, nested subvolumes are an error).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports exactly the actions a real run would take; nothing on the target changes.
  diff_mode:
    support: full
    description: Shows the subvolume's state, read-only flag, compression and default status before and after.
notes:
  - A subvolume counts as mounted if it, or a directory in it, is mounted in the mount namespace the
    module runs in. Mounts in other namespaces (containers) cannot be seen, and BTRFS itself deletes a
    subvolume that is mounted.
  - Check mode predicts a new subvolume's properties; C(id), C(uuid) and C(generation) of a
    subvolume that does not exist yet are returned as V(null).
  - See docs/btrfs.md in the collection for how the options map to C(community.general.btrfs_subvolume),
    and for the fields of the ledger entry.
extends_documentation_fragment:
  - opdbus.fleet.ledger
  - opdbus.fleet.ledger.write_ahead
seealso:
  - module: opdbus.fleet.btrfs_info
"""

EXAMPLES = r"""
- name: Lay out the state subvolume with zstd compression
  opdbus.fleet.btrfs_subvolume:
    path: /mnt/pool/@state
    compression: zstd

- name: Take a read-only snapshot before an upgrade (parents created as subvolumes)
  opdbus.fleet.btrfs_subvolume:
    path: /mnt/pool/@snapshots/root-before-upgrade
    snapshot_source: /mnt/pool/@root
    read_only: true
    recursive: true
  register: snapshot

- name: Show the snapshot's UUID and what was done
  ansible.builtin.debug:
    msg: "{{ snapshot.subvolume.uuid }} after {{ snapshot.actions | map(attribute='action') | list }}"

- name: Boot into a writable copy of the snapshot next time
  opdbus.fleet.btrfs_subvolume:
    path: /mnt/pool/@root-rollback
    snapshot_source: /mnt/pool/@snapshots/root-before-upgrade
    default: true

- name: Delete a subvolume and everything nested in it
  opdbus.fleet.btrfs_subvolume:
    path: /mnt/pool/@scratch
    state: absent
    recursive: true
"""

RETURN = r"""
actions:
  description:
    - The changes made (in check mode, the changes a real run would make), in order. Each has
      C(action) (V(create), V(snapshot), V(set_read_only), V(set_compression), V(set_default),
      V(reset_default) or V(delete)) and C(path), plus C(source) and C(read_only) for a snapshot,
      C(read_only) for V(set_read_only), C(compression) for V(set_compression).
    - When a command fails, the actions finished before it.
  returned: always
  type: list
  elements: dict
  sample:
    - {action: snapshot, path: /mnt/pool/@snapshots/s1, source: /mnt/pool/@root, read_only: false}
    - {action: set_compression, path: /mnt/pool/@snapshots/s1, compression: zstd}
    - {action: set_read_only, path: /mnt/pool/@snapshots/s1, read_only: true}
subvolume:
  description: The subvolume after the run (in check mode, as a real run would leave it).
  returned: when O(state=present)
  type: dict
  contains:
    path:
      description: The subvolume's path (normalised O(path)).
      type: str
      returned: always
    id:
      description: Subvolume ID; V(null) in check mode for a new subvolume.
      type: int
      returned: always
    uuid:
      description: The subvolume's UUID.
      type: str
      returned: always
    parent_uuid:
      description: UUID of the subvolume this one is a snapshot of; V(null) if it is not a snapshot.
      type: str
      returned: always
    received_uuid:
      description: UUID it was received as (btrfs receive); V(null) if none.
      type: str
      returned: always
    generation:
      description: Generation (transaction ID) of the subvolume's last change.
      type: int
      returned: always
    parent_id:
      description: ID of the subvolume this one is nested in; V(null) for the top level.
      type: int
      returned: always
    flags:
      description: Subvolume flags as btrfs-progs names them (V(readonly)).
      type: list
      elements: str
      returned: always
    read_only:
      description: Whether the subvolume is read-only.
      type: bool
      returned: always
    compression:
      description: The C(compression) property (V(zstd), V(lzo), V(zlib), V(none)); V(null) when not set.
      type: str
      returned: always
    default:
      description: Whether this is the filesystem's default subvolume.
      type: bool
      returned: always
  sample:
    path: /mnt/pool/@snapshots/s1
    id: 261
    uuid: 5c914ce0-afe8-2740-9c62-a3940c0d54bb
    parent_uuid: aae53547-1708-8244-a042-cec93f810ca8
    received_uuid: null
    generation: 14
    parent_id: 258
    flags: [readonly]
    read_only: true
    compression: zstd
    default: false
entry:
  description:
    - The C(btrfs_subvolume) outcome entry this run appended to the ledger (with the ledger's
      C(checkpoint) after it); V(null) when nothing changed and in check mode.
    - Also returned when a command fails after the first change; the entry then holds the actions done and the C(error).
  returned: always
  type: dict
  sample:
    seq: 4
    action: btrfs_subvolume
    host: laptop-17
    actor: root
    time: "2026-11-22T10:00:00.000000Z"
    changes:
      intent: 3
      path: /mnt/pool/@snapshots/s1
      state: present
      actions: [{action: snapshot, path: /mnt/pool/@snapshots/s1, source: /mnt/pool/@root, read_only: true}]
      subvolume: {id: 261, uuid: 5c914ce0-afe8-2740-9c62-a3940c0d54bb, parent_uuid: aae53547-1708-8244-a042-cec93f810ca8,
                  read_only: true, compression: null, default: false}
    state_sha256: null
    prev_root: 3a7b0f9e1c2d4b5a69788796a5b4c3d2e1f00112233445566778899aabbccdd
    checkpoint: {origin: 6d1c..., size: 5, root: 51e0...}
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.parse import COMPRESSION_CHOICES
from ansible_collections.opdbus.fleet.plugins.module_utils._btrfs.subvolume import subvolume_task
from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec, ledger_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module


def main():
    spec = ledger_spec().merge(ArgumentSpec(dict(
        path=dict(type="path", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        snapshot_source=dict(type="path"),
        read_only=dict(type="bool"),
        compression=dict(type="str", choices=list(COMPRESSION_CHOICES)),
        default=dict(type="bool"),
        recursive=dict(type="bool", default=False),
    )))
    run_module(spec, subvolume_task)


if __name__ == "__main__":
    main()
