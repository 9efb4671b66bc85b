# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command: ``opdbus`` and the guides' ``op-dbus``, two grammars over the same commands.

Installed by the opdbus.fleet.base role as /usr/local/bin/opdbus and /usr/local/bin/op-dbus (the
name it is called by picks the grammar). It needs python3, python3-dbus and python3-zstandard, not
ansible-core: it runs the collection's own tasks (see commands.py). Exit codes are in commands.py;
``--json`` prints the data of any command instead of text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ansible_collections.opdbus.fleet.plugins.module_utils._cli import commands
from ansible_collections.opdbus.fleet.plugins.module_utils._cli.config import CONFIG_FILE, load_config
from ansible_collections.opdbus.fleet.plugins.module_utils._common.context import TaskContext
from ansible_collections.opdbus.fleet.plugins.module_utils._common.errors import OpdbusError

EPILOG = ("exit codes: 0 done (or nothing to do), 1 failed or refused (nothing changed unless the message says "
          "what did), 2 bad command line, 3 --check found changes to make")


def opdbus_parser():
    parser = _parser("opdbus", "Hold this host in the state /etc/op-dbus/state.json declares, and audit its ledger.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = _command(sub, "apply", commands.apply, "apply the state file (every change is recorded in the ledger)")
    apply.add_argument("--check", action="store_true", help="only say what would change")
    apply.add_argument("--force", action="store_true", help="also take a snapshot afterwards")
    apply.add_argument("--if-idle", action="store_true",
                       help="do nothing when another op-dbus run holds the run lock (it applies the same file)")
    snapshot = _command(sub, "snapshot", commands.snapshot, "take a snapshot of the declared units")
    snapshot.add_argument("--prune", action="store_true", help="then apply the retention of " + CONFIG_FILE)
    snapshot.add_argument("--label", help="a label; a snapshot with this label is taken once")
    snapshot.add_argument("--check", action="store_true", help="only say what would be taken and pruned")
    rollback = _command(sub, "rollback", commands.rollback, "bring the units back to a restore point")
    rollback.add_argument("id", help="a restore point id (see `opdbus ledger list`), latest or previous")
    rollback.add_argument("--check", action="store_true", help="only say what would change")
    ledger = _command(sub, "ledger", None, "read and verify the ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")
    listing = _command(ledger_sub, "list", commands.ledger_list, "list entries, oldest first")
    listing.add_argument("--since", type=int, help="from this seq (negative: count from the end)")
    listing.add_argument("--limit", type=int, help="at most this many")
    show = _command(ledger_sub, "show", commands.ledger_show, "print one entry")
    show.add_argument("seq", type=int)
    verify = _command(ledger_sub, "verify", commands.ledger_verify, "verify the ledger (exit 1 when it does not)")
    verify.add_argument("--anchor", help="a checkpoint file ({origin, size, root}) the ledger must extend")
    _command(ledger_sub, "snapshots", commands.snapshots, "list restore points")
    numa = _command(sub, "numa", None, "the NUMA topology of this host")
    numa_sub = numa.add_subparsers(dest="numa_command", required=True, metavar="COMMAND")
    info = _command(numa_sub, "info", commands.numa_info, "nodes, CPUs, memory and devices")
    info.add_argument("--brief", action="store_true", help="one line: the number of nodes detected")
    _command(numa_sub, "stats", commands.numa_stats, "local allocation ratios per node")
    _command(sub, "doctor", commands.doctor, "check D-Bus, the ledger, BTRFS, snapshots and NUMA")
    return parser


def op_dbus_parser():
    """The command line the op-dbus guides use, mapped onto the same commands."""
    parser = _parser("op-dbus", "The op-dbus command line of the guides (see also `opdbus --help`).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = _command(sub, "apply", commands.apply, "apply /etc/op-dbus/state.json")
    apply.add_argument("--force", action="store_true", help="reconcile: apply, then take a snapshot")
    apply.set_defaults(check=False, if_idle=False)
    blockchain = _command(sub, "blockchain", None, "the ledger's restore points")
    chain = blockchain.add_subparsers(dest="blockchain_command", required=True, metavar="COMMAND")
    _command(chain, "snapshots", commands.snapshots, "list restore points")
    show = _command(chain, "show", commands.snapshot_show, "print a restore point")
    show.add_argument("id")
    rollback = _command(chain, "rollback", commands.rollback, "bring the units back to a restore point")
    rollback.add_argument("id")
    rollback.set_defaults(check=False)
    cache = _command(sub, "cache", None, "NUMA information")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")
    _command(cache_sub, "numa-info", commands.numa_info, "the NUMA topology").set_defaults(brief=False)
    _command(cache_sub, "numa-stats", commands.numa_stats, "local allocation ratios per node")
    _command(sub, "doctor", commands.doctor, "check D-Bus, the ledger, BTRFS, snapshots and NUMA")
    return parser


def _parser(prog, description):
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=EPILOG)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--config", default=CONFIG_FILE, help="host settings (default: %(default)s)")
    return parser


def _command(subparsers, name, run, summary):
    command = subparsers.add_parser(name, help=summary, description=summary, epilog=EPILOG)
    command.set_defaults(run=run)
    # Also after the command (`opdbus ledger list --json`); SUPPRESS keeps an earlier --json.
    command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON")
    return command


def main(argv=None, prog=None):
    """Run the command line ARGV (default: sys.argv); the grammar follows PROG, the name called by."""
    argv = sys.argv[1:] if argv is None else argv
    prog = os.path.basename(prog or sys.argv[0])
    parser = op_dbus_parser() if prog == "op-dbus" else opdbus_parser()
    arguments = parser.parse_args(argv)
    context = TaskContext()
    try:
        outcome = arguments.run(arguments, load_config(arguments.config), context)
    except OpdbusError as error:
        sys.stderr.write(f"{parser.prog}: {error}\n")
        if arguments.json and error.details:
            sys.stdout.write(json.dumps(error.details, indent=2, sort_keys=True, default=str) + "\n")
        return commands.EXIT_FAILED
    if arguments.json:
        sys.stdout.write(json.dumps(outcome.data, indent=2, sort_keys=True, default=str) + "\n")
    elif outcome.text:
        sys.stdout.write(outcome.text + "\n")
    return outcome.exit_code
