# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test train bench bench-peer clean constraints

# constraints.txt pins every package to the version the suite last passed with.
$(STAMP): setup.py constraints.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# One pytest process per core of the 2-core CI machine (pytest-xdist); a test goes to
# whichever process is free. The processes share the session's compilation cache.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VPY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

# Each benchmark prints one JSON object per measurement; variants are compared within one run.
BENCHMARKS := retrieval step_time data_stream
bench: $(STAMP)
	for b in $(BENCHMARKS); do $(VPY) benchmarks/$$b.py || exit 1; done

# The PyTorch peer (memorizing-transformers-pytorch 0.4.1) side by side with ours at
# step_time.py's CPU shape. The peer runs in its own venv (torch 2.13.0 is the CPU wheel
# on this disk; the peer without its faiss-gpu requirement, faiss-cpu instead); ours,
# step_time.py's variants with the exact and the approximate lookup, runs in .venv in a
# child process, the two stepping in turn so that the machine's load falls on both alike.
PEER_VENV := .venv-peer
PEER_PY := $(PEER_VENV)/bin/python
PEER_STAMP := $(PEER_VENV)/.installed
PEER_PACKAGES := torch==2.13.0 faiss-cpu==1.15.1 numpy==2.4.6 einops==0.8.2 \
	einops-exts==0.0.4 joblib==1.6.0 filelock==4.3.1
PEER_REPEATS ?= 8
$(PEER_STAMP):
	test -x $(PEER_PY) || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install --quiet --upgrade pip
	$(PEER_PY) -m pip install --quiet $(PEER_PACKAGES)
	$(PEER_PY) -m pip install --quiet --no-deps memorizing-transformers-pytorch==0.4.1
	touch $(PEER_STAMP)

bench-peer: $(PEER_STAMP) $(STAMP)
	$(PEER_PY) benchmarks/peer_pytorch.py --variants xl,xl_mem8k,xl_mem65k \
	  --lookup_methods exact,approx --repeats $(PEER_REPEATS) --lockstep $(VPY)

clean:
	rm -rf $(VENV) $(PEER_VENV) build *.egg-info

# After upgrading packages (pip install -U ... in .venv) and a passing `make test`.
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(VPY) -m pip freeze --exclude-editable | grep -v '^memorizing'; } > constraints.new
	mv constraints.new constraints.txt

# The CPU quickstart: a tiny model with XL cache and memory on the Python stdlib corpus.
WORKDIR ?= runs/quickstart
train: $(STAMP)
	$(VPY) -m memorizing_jax.main --gin_file=gin/quickstart.gin --workdir=$(WORKDIR)
