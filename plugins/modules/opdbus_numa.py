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
  - See C(docs/numa.md) in the collection for the strategies, what is read from where, and examples for DGX servers.
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
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.opdbus.fleet.plugins.module_utils.numa import (
    DEFAULT_DROPIN, SYSFS_ROOT, DropinSet, NumaError, Topology, check_dropin_name, check_systemd_version,
    check_unit_names, plan_placements, reload_and_restart)
from ansible_collections.opdbus.fleet.plugins.module_utils.systemd import SystemdClient, SystemdError, require_dbus


def main():
    module = AnsibleModule(
        argument_spec=dict(
            units=dict(type="dict", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            restart=dict(type="bool", default=False),
            dropin_name=dict(type="str", default=DEFAULT_DROPIN),
            sysfs_root=dict(type="path", default=SYSFS_ROOT),
            job_timeout=dict(type="int", default=90),
        ),
        supports_check_mode=True,
    )
    require_dbus(module)
    params = module.params
    dropins = None
    try:
        check_dropin_name(params["dropin_name"])
        check_unit_names(params["units"])
        client = SystemdClient()
        live = client.read_units(sorted(params["units"]))
        present = params["state"] == "present"
        if present:
            check_systemd_version(client.version())
        placements = plan_placements(Topology.read(params["sysfs_root"]), params["units"], live) if present else {}
        dropins = DropinSet({name: placements[name].dropin() if present else None for name in params["units"]},
                            params["dropin_name"])
        written = [dropin.unit for dropin in dropins.changed]
        # A drop-in already right on disk that systemd has not loaded (an earlier run failed before
        # its reload) still needs the reload, and the restart.
        client.fill_need_daemon_reload([live[name] for name in params["units"] if name not in written])
        unloaded = [name for name in params["units"] if name not in written and live[name].need_daemon_reload]
        changed = written + unloaded
        restart = [name for name in changed if params["restart"] and live[name].running]
        failures = {}
        if changed and not module.check_mode:
            dropins.apply()
            failures = reload_and_restart(client, restart, params["job_timeout"])
    except (NumaError, SystemdError) as error:
        module.fail_json(msg=str(error), changed=bool(dropins and dropins.written))

    units = {}
    for dropin in dropins.dropins:
        units[dropin.unit] = dict(path=dropin.path, changed=dropin.unit in changed,
                                  restarted=dropin.unit in restart and dropin.unit not in failures)
        if present:
            units[dropin.unit].update(placements[dropin.unit].as_dict())
    output = dict(
        changed=bool(changed),
        units=units,
        notes=[f"{name}: {note}" for name, placement in placements.items() for note in placement.notes]
        + [f"{name}: systemd had not loaded the drop-in yet; reloaded" for name in unloaded],
        diff=[dropin.diff() for dropin in dropins.changed],
    )
    if failures:
        module.fail_json(msg="units did not come back after the restart: " + "; ".join(failures.values()),
                         failed_units=failures, **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
