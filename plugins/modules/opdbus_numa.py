#!/usr/bin/python
# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: opdbus_numa
short_description: Place systemd units on NUMA nodes with a drop-in (CPUAffinity=, NUMAPolicy=, NUMAMask=)
version_added: 0.1.0
description:
  - Writes one drop-in per unit, C(/etc/systemd/system/UNIT.d/DROPIN_NAME), that sets the unit's
    C(CPUAffinity=), C(NUMAPolicy=) and C(NUMAMask=) from a placement strategy and the host's NUMA
    topology (read from sysfs as M(opdbus.fleet.opdbus_numa_info) reads it), then reloads systemd once
    through D-Bus and, when asked, restarts the units that are running so their processes get the placement.
  - Every unit is checked before anything is written - unknown nodes, devices or fields, CPUs outside
    the host or the chosen nodes, a strategy that needs nodes without them, and units that do not
    exist fail the task, naming the unit and the field, and nothing changes.
  - The file is compared with what it should hold; an unchanged file is not rewritten, systemd is
    not reloaded and no unit is restarted.
  - On a one-node host the strategies still write their drop-in and a note in the result says that the
    memory policy changes nothing there. A device on no particular node (C(numa_node) -1) places the unit
    on the only node of a one-node host and on no node of a multi-node host, with a note.
  - A run that changes something is recorded in the host's ledger as one C(numa) entry - per unit the
    drop-in's path, the SHA-256 of its text before and after (V(null) for no file), the placement and
    whether the unit was restarted, plus the daemon-reload and any failure. A run that changes nothing,
    and check mode, record nothing.
author:
  - opdbus.fleet developers (@opdbus)
options:
  units:
    description:
      - The units to place (or, with O(state=absent), whose drop-in to remove), each name mapped to its placement.
      - C(strategy) (required with O(state=present)) -
        V(local-node) runs the unit on the CPUs of C(nodes) or of the node recommended for C(device), with
        C(NUMAPolicy=local) so memory comes from the node it runs on;
        V(bind) runs it on the CPUs of C(nodes) and allocates memory only there (C(NUMAPolicy=bind));
        V(preferred) runs it on the CPUs of one node and prefers that node's memory;
        V(interleave) spreads its memory over C(nodes) (default - every node with memory) and runs it on their CPUs;
        V(default) writes the kernel defaults - no CPU affinity and C(NUMAPolicy=default), overriding any
        placement in the unit file itself.
      - C(nodes) - node numbers, as a list or in the kernel's list format (V(0-3,8)).
      - C(device) - instead of C(nodes), the node recommended for a device - its PCI address (V(0000:07:00.0)),
        C(gpuN) (GPUs in PCI address order), a network interface name or C(nvmeN), as listed by
        M(opdbus.fleet.opdbus_numa_info).
      - C(cpus) - run the unit on these CPUs instead of all CPUs of its nodes; they must be CPUs of those
        nodes (of the host with V(default)). A list, or the kernel's list format (V(1), V(0-3,8)).
      - Only units that run processes can be placed - services, sockets, mounts and swaps.
    type: dict
    required: true
  state:
    description:
      - V(present) writes each unit's drop-in; V(absent) removes it, so the unit runs as its unit file
        says. The C(UNIT.d) directory is left in place - an empty one has no effect.
    type: str
    choices: [present, absent]
    default: present
  restart:
    description:
      - Restart the units whose drop-in changed and that are running, in one batch, so their processes
        run with the new placement. Without it, the placement applies from the unit's next start.
    type: bool
    default: false
  dropin_name:
    description:
      - File name of the drop-in in the unit's C(.d) directory. systemd reads drop-ins in file name
        order and a later one overrides an earlier one; with the default, drop-ins named from
        C(51) up still override this one.
    type: str
    default: 50-opdbus-numa.conf
  sysfs_root:
    description:
      - Where sysfs is mounted. Only tests need another value, to read a fixture tree.
    type: path
    default: /sys
  job_timeout:
    description:
      - Seconds to wait for the restarts to finish.
    type: int
    default: 90
attributes:
  check_mode:
    support: full
    description: Reports which drop-ins would change and which units would be restarted; nothing is written.
  diff_mode:
    support: full
    description: Shows each changed drop-in's text before and after.
requirements:
  - systemd 243 or later on the managed host (C(NUMAPolicy=) and C(NUMAMask=)); with O(state=present)
    the module refuses older versions (RHEL 8 has 239) before writing anything, since they would ignore the drop-in
  - dbus-python on the managed host (C(python3-dbus) on Debian, Ubuntu, Fedora and RHEL); when the
    interpreter in use lacks it, the module re-runs itself under the system Python that has it
notes:
  - C(CPUAffinity=) and C(NUMAMask=) add up across a unit file and its drop-ins, so the drop-in first
    assigns them empty; the drop-in alone decides the unit's placement.
  - Units are placed in the system manager only (drop-ins under C(/etc/systemd/system)).
  - See C(docs/numa.md) in the collection for the fields of the ledger entry.
  - See C(docs/numa.md) in the collection for the strategies, what is read from where, and examples for DGX servers.
extends_documentation_fragment:
  - opdbus.fleet.ledger
  - opdbus.fleet.ledger.write_ahead
seealso:
  - module: opdbus.fleet.opdbus_numa_info
"""

EXAMPLES = r"""
- name: DGX - run each GPU's data loader next to its GPU, the storage client near its NIC
  opdbus.fleet.opdbus_numa:
    units:
      loader@0.service: {strategy: local-node, device: gpu0}
      loader@4.service: {strategy: local-node, device: gpu4}
      beegfs-client.service: {strategy: local-node, device: ibp225s0f0}
    restart: true

- name: Keep a database's memory on socket 0, and let a cache spread over all nodes
  opdbus.fleet.opdbus_numa:
    units:
      postgresql@15-main.service: {strategy: bind, nodes: [0]}
      memcached.service: {strategy: interleave}
    restart: true

- name: Pin a service to CPUs 2-3 of node 0 and prefer that node's memory
  opdbus.fleet.opdbus_numa:
    units:
      worker.service: {strategy: preferred, nodes: 0, cpus: "2-3"}

- name: Remove the placements again
  opdbus.fleet.opdbus_numa:
    units:
      postgresql@15-main.service:
      memcached.service:
    state: absent
    restart: true
"""

RETURN = r"""
units:
  description: Per unit, its drop-in and what the run did with it.
  returned: always
  type: dict
  contains:
    path: {description: The drop-in file., type: str, returned: always}
    changed:
      description:
        - Whether the drop-in was (in check mode, would be) written or removed, or systemd had not
          loaded it yet (a run that failed before its reload) and was reloaded.
      type: bool
      returned: always
    restarted:
      description: Whether the unit was (in check mode, would be) restarted.
      type: bool
      returned: always
    strategy: {description: The strategy asked for., type: str, returned: with O(state=present)}
    nodes: {description: The nodes the unit is placed on (empty when on none)., type: list, elements: int, returned: with O(state=present)}
    cpus: {description: The CPUs in C(CPUAffinity=) (empty - any CPU)., type: list, elements: int, returned: with O(state=present)}
    policy:
      description: The C(NUMAPolicy=) written; null on a kernel without NUMA support.
      type: str
      returned: with O(state=present)
    mask: {description: The nodes in C(NUMAMask=); null for the policies that take none., type: list, elements: int, returned: with O(state=present)}
    notes: {description: How the placement was adapted to this host., type: list, elements: str, returned: with O(state=present)}
  sample:
    worker.service:
      path: /etc/systemd/system/worker.service.d/50-opdbus-numa.conf
      changed: true
      restarted: true
      strategy: bind
      nodes: [0]
      cpus: [1]
      policy: bind
      mask: [0]
      notes: ["this host has one NUMA node, so NUMAPolicy=bind changes nothing; CPUAffinity= still applies"]
notes:
  description: The notes of every unit, each prefixed with the unit name.
  returned: always
  type: list
  elements: str
failed_units:
  description: Units that were restarted but are not running afterwards, with the reason.
  returned: when a restart failed
  type: dict
entry:
  description:
    - The C(numa) outcome entry this run appended to the ledger (with the ledger's C(checkpoint) after it);
      V(null) when nothing changed and in check mode.
    - Also returned when the task fails after its first change; the entry then holds what was done and the C(error).
  returned: always
  type: dict
  sample:
    seq: 8
    action: numa
    host: dgx-03
    actor: root
    time: "2026-11-22T10:00:00.000000Z"
    changes:
      intent: 7
      state: present
      daemon_reload: true
      restart_requested: [worker.service]
      units:
        - unit: worker.service
          path: /etc/systemd/system/worker.service.d/50-opdbus-numa.conf
          written: true
          before_sha256: null
          after_sha256: 0c8f5d6bd1ac6a54e1b4bdbbe71f0f1ad0a5b16e20d8ea5ee0e6a1a48fd1b8f3
          placement: {strategy: bind, nodes: [0], cpus: [1], policy: bind, mask: [0]}
          restarted: true
    state_sha256: null
    prev_root: 3a7b0f9e1c2d4b5a69788796a5b4c3d2e1f00112233445566778899aabbccdd
    checkpoint: {origin: 6d1c..., size: 9, root: 51e0...}
"""

from ansible_collections.opdbus.fleet.plugins.module_utils._common.argspec import ArgumentSpec, job_timeout_spec, ledger_spec
from ansible_collections.opdbus.fleet.plugins.module_utils._module import run_module
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.placement import DEFAULT_DROPIN, placement_task
from ansible_collections.opdbus.fleet.plugins.module_utils._numa.topology import sysfs_spec


def main():
    spec = ledger_spec().merge(job_timeout_spec(), sysfs_spec(), ArgumentSpec(dict(
        units=dict(type="dict", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        restart=dict(type="bool", default=False),
        dropin_name=dict(type="str", default=DEFAULT_DROPIN),
    )))
    run_module(spec, placement_task, needs=("dbus",))


if __name__ == "__main__":
    main()
