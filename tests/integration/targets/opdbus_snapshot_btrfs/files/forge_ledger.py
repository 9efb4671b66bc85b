# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a ledger that verifies from its own files and holds the entries given as JSON.

That is what a consistent rewrite by someone with root on the host looks like: only a checkpoint
kept elsewhere tells it apart. The entries are appended with the collection's own Ledger, run on
the controller. Usage: forge_ledger.py DIRECTORY HOST ENTRIES_JSON
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The collection under test: where the test run points Ansible, else the repository's build/.
ROOTS = [os.path.join(HERE, *[os.pardir] * 5, "build")] + os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep)
for root in filter(None, ROOTS):
    sys.path.insert(0, root)

from ansible_collections.opdbus.fleet.plugins.module_utils._ledger.store import Ledger  # noqa: E402  (path set up above


def main():
    directory, host, entries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ledger = Ledger(directory, host=host)
    for entry in entries:
        ledger.append(entry["action"], entry["changes"], state_sha256=entry.get("state_sha256"), actor="root")
    print(json.dumps(ledger.checkpoint()))


if __name__ == "__main__":
    main()
