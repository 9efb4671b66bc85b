# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command's text for people: pure functions from task results to lines (``--json`` prints the data)."""

from __future__ import annotations

MARKS = {"ok": "\u2713", "warn": "\u26a0", "fail": "\u2717"}


def apply_result(result, check_mode):
    """An apply or a rollback: the actions (that would run, in check mode), files, absent units, the entry."""
    lines = []
    verb = "would run" if check_mode else "ran"
    if not result["changed"]:
        lines.append("nothing to do: every declared unit is in its declared state")
    for action in result.get("actions", []):
        lines.append(f"{verb}: {action['action']} {action['unit']}")
    for path in result.get("files", []):
        lines.append(f"{'would write' if check_mode else 'wrote'}: {path}")
    if result.get("absent"):
        lines.append("not installed, declaration holds: " + ", ".join(result["absent"]))
    for unit, conditions in sorted(result.get("conditions_unmet", {}).items()):
        lines.append(f"not started, conditions unmet: {unit} ({', '.join(conditions)})")
    if result.get("entry"):
        lines.append(f"recorded as ledger entry {result['entry']['seq']}")
    return "\n".join(lines)


def snapshot_result(result, check_mode):
    lines = []
    point = result.get("snapshot")
    if point and result.get("unchanged"):
        lines.append(f"state unchanged since restore point {point['id']} ({point['kind']}, {point['time']}): "
                     "nothing recorded")
    elif point and result["entry"]:
        lines.append(f"snapshot {point['id']} taken: {_count(point['units'])} units{_label(point)}")
    elif point:
        lines.append(f"snapshot {point['id']}{_label(point)} exists already: nothing taken")
    elif check_mode and result["changed"]:
        lines.append("would take a snapshot")
    removed = result.get("removed") or []
    if removed:
        ids = ", ".join(str(point["id"]) if isinstance(point, dict) else str(point) for point in removed)
        lines.append(f"{'would prune' if check_mode else 'pruned'}: restore points {ids}")
    elif "removed" in result:
        lines.append("retention keeps every restore point")
    return "\n".join(lines)


def _count(units):
    """A restore point's unit count (only snapshots record one)."""
    return "-" if units is None else str(units)


def _label(point):
    return f" ({point['label']})" if point.get("label") else ""


def entries(items):
    """``SEQ  TIME  ACTION  ACTOR  what``, one line per ledger entry."""
    rows = [(str(entry.get("seq")), str(entry.get("time")), str(entry.get("action")), str(entry.get("actor")),
             _summary(entry)) for entry in items]
    return _table(("SEQ", "TIME", "ACTION", "ACTOR", "CHANGES"), rows) if rows else "the ledger is empty"


def _summary(entry):
    changes = entry.get("changes")
    if isinstance(changes, dict):
        units = changes.get("units")
        if isinstance(units, int) and not isinstance(units, bool):  # a snapshot records its unit count
            label = f" ({changes['label']})" if changes.get("label") else ""
            return f"{units} units{label}"
        if isinstance(units, list):
            done = [f"{' '.join(item.get('actions', []))} {item.get('unit')}" for item in units if isinstance(item, dict)]
            if done:
                return "; ".join(done)
        if "intent" in changes:
            return f"outcome of intent {changes['intent']}"
        if "planned" in changes:
            return f"intent: {len(changes['planned'])} planned"
        if isinstance(changes.get("files"), list) and isinstance(changes.get("packages", []), list):
            return (f"{changes.get('role', 'files')}: {len(changes['files'])} files, "
                    f"{len(changes.get('packages', []))} packages")
        return ", ".join(sorted(changes))
    return f"{len(changes)} changes" if isinstance(changes, list) else ""


def restore_points(points):
    rows = [(str(point["id"]), point["time"], point["kind"], point.get("label") or "", _count(point["units"]),
             str(point["size"]) if point.get("size") is not None else "missing") for point in points]
    return _table(("ID", "TIME", "KIND", "LABEL", "UNITS", "BYTES"), rows) if rows else "no restore points"


def verification(report):
    checkpoint = report["checkpoint"]
    lines = [f"ledger {checkpoint['origin']}: {checkpoint['size']} entries, root {checkpoint['root']}",
             "valid" if report["valid"] else "INVALID"]
    lines += [f"problem: {problem['kind']} (seq {problem['seq']}): {problem['detail']}" for problem in report["problems"]]
    lines += [f"recoverable: {item['detail']}" for item in report["recoverable"]]
    lines += [f"interrupted run: intent {run['seq']} ({run['action']})" for run in report["interrupted"]]
    if report.get("anchor_checked"):
        lines.append("extends the anchor" if report["valid"] else "does not extend the anchor")
    return "\n".join(lines)


def numa_info(details):
    """The guide's shape: ``Node 0: 8 CPUs, 32768 MB RAM``, then the current and optimal node and the strategy."""
    lines = ["NUMA Topology", "============"]
    for node in details["nodes"]:
        total = node["memory"].get("total_kb")
        memory = f"{total // 1024} MB RAM" if total is not None else "memory unknown"
        lines.append(f"Node {node['id']}: {len(node['cpus'])} CPUs, {memory}")
    lines += ["", f"Current Node: {_or_unknown(details['current_node'])}",
              f"Optimal Node: {_or_unknown(details['optimal_node'])}", f"Strategy: {details['strategy']}"]
    for device in details["devices"]:
        lines.append(f"{device['kind']} {device['address']} ({', '.join(device['names']) or '-'}): "
                     f"node {_or_unknown(device['node'])}")
    return "\n".join(lines)


def numa_stats(topology):
    """Per node the share of local allocations (numastat); latency is not something the kernel reports."""
    lines = ["NUMA Statistics", "=============="]
    for node in topology["nodes"]:
        ratio = node["local_hit_ratio"]
        hits = f"{ratio * 100:.1f}% local hits" if ratio is not None else "no allocations counted"
        stats = node["numastat"]
        lines.append(f"Node {node['id']}: {hits} (numa_hit {stats.get('numa_hit', 0)}, "
                     f"numa_miss {stats.get('numa_miss', 0)}, other_node {stats.get('other_node', 0)})")
    return "\n".join(lines)


def checks(results):
    return "\n".join(f"{MARKS[item['status']]} {item['check']}: {item['detail']}" for item in results)


def _or_unknown(value):
    return "unknown" if value is None else value


def _table(header, rows):
    widths = [max(len(row[index]) for row in [header] + rows) for index in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header] + rows)
