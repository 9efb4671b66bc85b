# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the get-pip.py that `ansible-test --venv` downloads from a file server.

The Makefile installs it as ~/.ansible/test/cache/get_pip_<version>.py, so ansible-test bootstraps
pip from the interpreter's bundled ensurepip and then pip-installs the pinned pip from the package
index instead of downloading the bootstrap script.
"""

import subprocess
import sys

# get-pip.py options that pip install does not know.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main():
    # ensurepip disables pip's configuration in its own process, so it must run in a child.
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True, stdout=subprocess.DEVNULL)
    arguments = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", *arguments], check=False).returncode)


if __name__ == "__main__":
    main()
