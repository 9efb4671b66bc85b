# Copyright (c) opdbus.fleet developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the 4-node VM measures, in place of the guide's never-measured sample numbers.

The guide prints local and remote latencies and hit rates without having measured them. This runs a
copy from CPU node 0 into memory bound to each node, checks that the pages really were on that node,
and prints the copy rate and the kernel's numastat hit rates. The VM is emulated (QEMU, usually TCG),
which models no cost of distance, so the rates are labelled as an emulated machine's and are not a
prediction for hardware."""

import json

HOST = "numa4"
COPY_MIB = 64
# Fills a source buffer (so that its pages exist), copies it into a target buffer five times, and reports
# the best rate and the nodes holding the pages of both buffers, from its own numa_maps.
PROBE = f"""
import json, re, time
size = {COPY_MIB} << 20
source = bytearray(b"\\x01") * size
target = bytearray(size)
best = None
for _ in range(5):
    started = time.perf_counter()
    target[:] = source
    elapsed = time.perf_counter() - started
    best = elapsed if best is None else min(best, elapsed)
pages = {{}}
with open("/proc/self/numa_maps") as maps:
    for line in maps:
        fields = line.split()
        if "anon=" in line and int(next(f for f in fields if f.startswith("anon="))[5:]) >= (size >> 12) // 2:
            for node, count in re.findall(r"N(\\d+)=(\\d+)", line):
                pages[node] = pages.get(node, 0) + int(count)
print(json.dumps({{"mib_per_second": {COPY_MIB} / best, "pages": pages}}))
"""


def numastat(fleet):
    """{node: {counter: value}} from sysfs."""
    listing = fleet.ssh(HOST, "for f in /sys/devices/system/node/node*/numastat; do echo \"== $f\"; cat $f; done").stdout
    counters, node = {}, None
    for line in listing.splitlines():
        if line.startswith("== "):
            node = int(line.split("/node/node")[1].split("/")[0])
            counters[node] = {}
        else:
            name, value = line.split()
            counters[node][name] = int(value)
    return counters


def test_copy_rates_from_node_0_into_each_node_on_the_emulated_machine(fleet):
    info = fleet.run_module(HOST, "opdbus.fleet.opdbus_numa_info", {})
    node0_cpus = ",".join(str(cpu) for cpu in info["nodes"][0]["cpus"])
    rows = []
    for node in info["node_ids"]:
        reply = fleet.ssh(HOST, f"systemd-run --quiet --pipe --wait -p CPUAffinity={node0_cpus} -p NUMAPolicy=bind "
                                f"-p NUMAMask={node} python3 -c '{PROBE}'", timeout=180).stdout
        measured = json.loads(reply)
        pages = {int(key): value for key, value in measured["pages"].items()}
        assert pages and max(pages, key=pages.get) == node and pages[node] >= 0.9 * sum(pages.values()), (node, pages)
        assert measured["mib_per_second"] > 0
        rows.append((node, info["distance_matrix"][0][node], measured["mib_per_second"]))
    counters = numastat(fleet)
    print(f"\nMeasured on an EMULATED machine ({fleet.state()['hosts'][HOST]['accelerator'].upper()}, "
          "QEMU models no cost of distance): "
          f"{COPY_MIB} MiB copied by a CPU of node 0 into memory bound to each node, best of 5")
    print(f"{'memory node':>12} {'distance':>9} {'MiB/s':>8}")
    for node, distance, rate in rows:
        print(f"{node:>12} {distance:>9} {rate:>8.0f}")
    print("numastat since boot: numa_hit / (numa_hit + numa_miss) per node")
    for node, values in sorted(counters.items()):
        allocated = values["numa_hit"] + values["numa_miss"]
        print(f"  node {node}: {values['numa_hit'] / allocated:.1%} of {allocated} allocations "
              f"(numa_foreign {values['numa_foreign']}, interleave_hit {values['interleave_hit']})")
