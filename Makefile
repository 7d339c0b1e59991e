# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test train bench clean constraints

# constraints.txt pins every package to the version the suite last passed with.
$(STAMP): setup.py constraints.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q tests

# Each benchmark prints one JSON object per measurement; variants are compared within one run.
BENCHMARKS := retrieval step_time data_stream
bench: $(STAMP)
	for b in $(BENCHMARKS); do $(VPY) benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info

# After upgrading packages (pip install -U ... in .venv) and a passing `make test`.
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(VPY) -m pip freeze --exclude-editable | grep -v '^memorizing'; } > constraints.new
	mv constraints.new constraints.txt

# The CPU quickstart: a tiny model with XL cache and memory on the Python stdlib corpus.
WORKDIR ?= runs/quickstart
train: $(STAMP)
	$(VPY) -m memorizing_jax.main --gin_file=gin/quickstart.gin --workdir=$(WORKDIR)
