# dastudy — two commands work on a fresh machine: `make demo` and `make test`.
# Set-up is idempotent: the venv is created once and the project (re)installed only when
# pyproject.toml or constraints.txt change; pip never reinstalls an already satisfied torch.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dastudy-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test test-extended test-quick browser postgresql slurm clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,postgres,s3-test,pb2]"
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/dastudy demo

# The browser check (TensorBoard HParams page) needs a headless chromium: install it where
# missing; where it cannot be installed the test skips itself with a clear message.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (command -v apt-get >/dev/null 2>&1 && \
	   (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1)) ) || \
	  echo "note: chromium could not be installed; the browser check will be skipped"

# The PostgreSQL test (Optuna RDB storage) starts its own server from Debian's postgresql package
# (initdb/pg_ctl on a private port and data dir): install it where missing, else the test skips itself.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	  (command -v apt-get >/dev/null 2>&1 && \
	   (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1)) ) || \
	  echo "note: PostgreSQL could not be installed; the PostgreSQL storage test will be skipped"

# The SLURM tests (tests/deploy/test_slurm.py) start their own single-node cluster from Debian's slurm-wlm and
# munge (private config, state, key, socket and ports; the machine's /etc/slurm and /run/munge are never used):
# install them where missing, else those tests skip themselves with a clear message.
slurm:
	@test -x /usr/sbin/slurmctld && test -x /usr/sbin/munged && test -x /usr/bin/sbatch || \
	  (command -v apt-get >/dev/null 2>&1 && \
	   (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1)) ) || \
	  echo "note: slurm-wlm/munge could not be installed; the SLURM tests will be skipped"

# Two workers (pytest-xdist), one test file each at a time, so module fixtures such as the loaded reliability study
# run once: most slow tests wait on Ray start-up, servers and subprocesses, and two of them share 2 cores well. A fresh
# clone on the 2-core VM: 12.5-15.3 min serially, 9.9-10.2 min with two workers (docs/reliability.md, "A bare machine").
TEST_WORKERS ?= 2
test: setup browser postgresql slurm
	$(PY) -m pytest -q --durations=25 -m "not extended" -n $(TEST_WORKERS) --dist loadfile

test-extended: setup browser postgresql slurm
	$(PY) -m pytest -q --durations=25 -m extended

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	@echo "remove .venv by hand if you really want to: rm -r .venv"
