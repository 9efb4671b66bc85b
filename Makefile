# opdbus.fleet — every developer and CI entry point. `make help` lists the targets.
# `make test` and `make demo` install what they need first (Debian packages, a virtualenv with the
# pinned Python tools from tests/requirements.txt, the ansible-test pip bootstrap shim).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(CURDIR)/$(VENV)/bin
PYTHON      := $(BIN)/python
BUILD       := build
# ansible-test wants the collection at …/ansible_collections/opdbus/fleet. Pytest and Ansible use a
# symlink to this checkout; ansible-test resolves symlinks, so sanity runs on a copy, and that copy
# lives outside the checkout because inside it ansible-test asks our git and sees only ignored files.
COLLECTIONS := $(CURDIR)/$(BUILD)
SANITY_COPY := /var/tmp/opdbus-fleet-sanity-$(shell echo $(CURDIR) | cksum | cut -d' ' -f1)/ansible_collections/opdbus/fleet
FLEET       := $(PYTHON) tests/fleet/fleet.py
STAGE       := tests/tools/stage.sh
SYSTEM_PYTHON ?= python3
APT_PACKAGES := debootstrap systemd-container btrfs-progs iproute2 openssh-client rsync python3-venv nginx git qemu-system-x86 qemu-utils ipxe-qemu ovmf fdisk dosfstools mtools
export ANSIBLE_CONFIG := $(CURDIR)/tests/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export PYTHONPATH := $(COLLECTIONS)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PATH := $(BIN):$(PATH)

.PHONY: help deps demo bench test sanity lint units fuzz integration vm netboot molecule changelog-lint clean-fleet check-clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# ---------------------------------------------------------------------------------------- setup
deps: $(VENV)/.installed $(BUILD)/ansible_collections/opdbus/fleet ## install Debian packages, the venv and the ansible-test shim
	@pip_version=$$($(PYTHON) -c "import re, ansible_test, os; src = open(os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')).read(); print(re.search(r\"pip='([0-9.]+)'\", src).group(1))"); \
	  mkdir -p ~/.ansible/test/cache; \
	  install -m 0644 tests/tools/get_pip_shim.py ~/.ansible/test/cache/get_pip_$${pip_version//./_}.py

apt-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -ne 0 ]; then echo "missing Debian packages: $$missing — run make as root so it can apt-get install them"; exit 1; fi; \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: tests/requirements.txt | apt-packages
	@test -x $(PYTHON) || $(SYSTEM_PYTHON) -m venv $(VENV)
	@$(PYTHON) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@$(PYTHON) -m pip install -q -r tests/requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
	@$(PYTHON) -m pip check >/dev/null && $(PYTHON) -c "import ansible, molecule, testinfra, hypothesis, ansible_runner, ansible_builder" && touch $@

$(BUILD)/ansible_collections/opdbus/fleet:
	@mkdir -p $(dir $@) && ln -sfn ../../.. $@

.PHONY: apt-packages

# ---------------------------------------------------------------------------------------- demo
DEMO_PLAYBOOK = $(BIN)/ansible-playbook -i /run/opdbus-fleet/demo/inventory.yml playbooks/demo/$(1)

demo: deps ## boot three hosts, roll the laptop role out, re-run, repair drift, take, list and roll back snapshots
	@trap '$(FLEET) down --name demo' EXIT; set -e; \
	echo "== 1. boot three real systemd hosts (systemd-nspawn, one network namespace each)"; \
	$(FLEET) up --name demo --hosts 3 >/dev/null; \
	echo "== 2. roll the laptop profile out with its role (opdbus.fleet.laptop)"; \
	$(call DEMO_PLAYBOOK,apply.yml); \
	echo "== 3. run it again: nothing to do, changed=0"; \
	$(call DEMO_PLAYBOOK,apply.yml); \
	echo "== 4. stop NetworkManager on node2 behind Ansible's back, then look for drift"; \
	$(FLEET) ssh --name demo node2 -- systemctl stop NetworkManager.service; \
	$(call DEMO_PLAYBOOK,drift.yml); \
	echo "== 5. run the role again: only node2 changes, and its ledger records the repair"; \
	$(call DEMO_PLAYBOOK,apply.yml); \
	echo "== 6. on node1, with the guide's own commands: take a snapshot and list the restore points"; \
	$(FLEET) ssh --name demo node1 -- opdbus snapshot --label before-change; \
	$(FLEET) ssh --name demo node1 -- op-dbus blockchain snapshots; \
	echo "== 7. on node1: declare NetworkManager stopped (a recorded change), then roll back to the snapshot"; \
	$(call DEMO_PLAYBOOK,apply.yml) --limit node1 -e @playbooks/demo/network_manager_off.yml; \
	$(FLEET) ssh --name demo node1 -- systemctl is-active NetworkManager.service || true; \
	$(FLEET) ssh --name demo node1 -- op-dbus blockchain rollback latest; \
	$(FLEET) ssh --name demo node1 -- systemctl is-active NetworkManager.service; \
	echo "== 8. each host's ledger: verified, with the checkpoint to keep on the controller"; \
	$(call DEMO_PLAYBOOK,ledger.yml)

# ---------------------------------------------------------------------------------------- bench
bench: deps ## benchmarks, printed as ratios against their baselines (needs root)
	@rc=0; for script in tests/bench/bench_*.py; do \
	  echo "== $$script"; $(PYTHON) $$script || rc=1; \
	done; exit $$rc

# ---------------------------------------------------------------------------------------- test
test: deps ## install what is needed and run every stage (CI runs this)
	@rm -f $(BUILD)/stages.txt; rc=0; \
	for stage in changelog-lint sanity lint units fuzz integration vm netboot molecule; do \
	  $(STAGE) $$stage $(MAKE) --no-print-directory $$stage || rc=1; \
	done; \
	printf '\n%-16s %-14s %s\n' stage result seconds; awk '{printf "%-16s %-14s %s\n", $$1, $$2, $$3; t += $$3; if ($$2 == "passed") p++; else f++} \
	  END {printf "%-16s %-14s %s\n", "total", "", t; printf "stages: %d passed, %d failed\n", p, f}' $(BUILD)/stages.txt; \
	exit $$rc

changelog-lint: deps ## validate changelog fragments
	@$(BIN)/antsibull-changelog lint

sanity: deps ## ansible-test sanity on a copy at ansible_collections/opdbus/fleet
	@mkdir -p $(SANITY_COPY)
	@rsync -a --delete --exclude=/.venv --exclude=/build --exclude=/.git --exclude=__pycache__ \
	  --exclude=.pytest_cache --exclude=.hypothesis --exclude=/tests/output ./ $(SANITY_COPY)/
	@cd $(SANITY_COPY) && $(BIN)/ansible-test sanity --venv --python 3.11 --color no

lint: deps ## ansible-lint, production profile
	@$(BIN)/ansible-lint --profile production --nocolor

units: deps ## unit tests of pure logic
	@$(PYTHON) -m pytest tests/unit -q -p no:cacheprovider

# The fuzz test boots its own fleet (OPDBUS_FLEET_NAME, default fuzz) and removes it, also when interrupted.
FUZZ_CASES  ?= 10400
FUZZ_BUDGET ?= 420
fuzz: deps ## >= 10,000 generated bad inputs through every module on a real systemd host, in FUZZ_BUDGET s (needs root)
	@if [ "$$(id -u)" -ne 0 ]; then echo "fuzz: needs root (systemd-nspawn, network namespaces, loop devices); NOT RUN"; exit 1; fi
	@$(PYTHON) tests/fuzz/harness.py --cases $(FUZZ_CASES) --budget $(FUZZ_BUDGET) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

integration: deps ## tests against a fleet of real systemd hosts (needs root)
	@if [ "$$(id -u)" -ne 0 ]; then echo "integration: needs root (systemd-nspawn, network namespaces, loop devices); NOT RUN"; exit 1; fi
	@rc=0; $(PYTHON) -m pytest tests/integration -q -p no:cacheprovider || rc=$$?; \
	  $(FLEET) down --prefix itest; $(FLEET) check-clean --prefix itest || rc=1; exit $$rc

vm: deps ## tests on QEMU virtual-machine hosts of the test fleet: real kernels, NUMA (needs root)
	@if [ "$$(id -u)" -ne 0 ]; then echo "vm: needs root (QEMU on the fleet bridge, taps); NOT RUN"; exit 1; fi
	@rc=0; $(PYTHON) -m pytest tests/vm -q -s -p no:cacheprovider || rc=$$?; \
	  $(FLEET) down --prefix vmtest; $(FLEET) check-clean --prefix vmtest || rc=1; exit $$rc

netboot: deps ## the install's disk layout and refusals on loop devices, then a VM installed over the network (needs root)
	@if [ "$$(id -u)" -ne 0 ]; then echo "netboot: needs root (loop devices, nginx, QEMU); NOT RUN"; exit 1; fi
	@rc=0; $(PYTHON) -m pytest tests/netboot -q -s -p no:cacheprovider || rc=$$?; \
	  $(FLEET) down --prefix nb; $(FLEET) check-clean --prefix nb || rc=1; exit $$rc

molecule: deps ## Molecule scenarios on test-fleet hosts (needs root)
	@if [ "$$(id -u)" -ne 0 ]; then echo "molecule: needs root (systemd-nspawn, network namespaces, loop devices); NOT RUN"; exit 1; fi
	@rc=0; NO_COLOR=1 ANSIBLE_NOCOLOR=1 $(BIN)/molecule test --all || rc=$$?; \
	  $(FLEET) down --prefix mol; $(FLEET) check-clean --prefix mol || rc=1; exit $$rc

clean-fleet: deps ## stop every test fleet and remove what it left behind
	@$(FLEET) down --all && $(FLEET) check-clean

check-clean: deps ## fail if any test fleet left a process, namespace, link, mount or loop device
	@$(FLEET) check-clean
