# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch, installed before the project: a bare `torch` resolved by pip on its own
# pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_QUERY ?= why are glacial lakes turquoise?

.PHONY: demo test test-e2e install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[ocr]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/ingest run samples
	$(BIN)/ingest search "$(DEMO_QUERY)" -k 3

# One session: the tests of the store's semantics (marker `store`: writes, re-runs, prune,
# search, export) run against each embedded backend, Qdrant Edge and qdrant-client's local mode
# (which stands in for a Qdrant server); the rest against Edge. Two workers: much of the suite
# waits on real servers and processes, and every test must hold up on a busy machine.
PYTEST_WORKERS ?= 3
test: install-test
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal --durations=15

test-e2e: install-test
	$(BIN)/python -m pytest -m e2e

clean:
	rm -rf .ingest

# Benchmarks (bench/): `make bench FILES=50 REPEAT=1 RSS_FILES=0` for a quick check.
.PHONY: bench bench-peers bench-int8 bench-rerun bench-store bench-dask eval eval-variants bench-search bench-ocr
# Retrieval quality on 32 real documents, 121 questions: dense, sparse and hybrid side by side.
eval: install-test
	$(BIN)/python -m bench.eval $(EVAL_ARGS)

# Retrieval variants (candidate depth, fusion weights, ranking by file, titles) on make eval's
# collection, built once and kept in $(EVAL_STORE).
EVAL_STORE ?= bench/.eval-store
eval-variants: install-test
	$(BIN)/python -m bench.eval --store-path $(EVAL_STORE)
	$(BIN)/python -m bench.eval_variants --store-path $(EVAL_STORE) --titles

# GET /search latency on a collection of $(CHUNKS) chunks (20,000 by default), warm process.
bench-search: install-test
	$(BIN)/python -m bench.search --chunks $(or $(CHUNKS),20000)

# OCR: character error rate on scanned pages, seconds per page, auto vs off on a batch without scans.
bench-ocr: install-test
	$(BIN)/python -m bench.ocr $(OCR_ARGS)

# Generated corpus (limit, plain encode, pipeline fp32 and bf16, seed baseline, RSS at 10x files),
# then real documents beside LlamaIndex (extra [peers]): default and fp32 against the peer.
bench: install-test $(VENV)/.installed-peers
	$(BIN)/python -m bench.throughput --files $(or $(FILES),300) --repeat $(or $(REPEAT),3) --rss-files $(or $(RSS_FILES),1000)
	$(BIN)/python -m bench.peers --rounds $(or $(ROUNDS),3) $(PEER_ARGS)

bench-peers: install-test $(VENV)/.installed-peers
	$(BIN)/python -m bench.peers --rounds $(or $(ROUNDS),3) $(PEER_ARGS)

$(VENV)/.installed-peers: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[peers]'
	touch $@

# The int8 trial (issue #18): NNCF is a bench-only tool, not a dependency of the project.
bench-int8: install-test
	$(BIN)/pip install -q nncf==3.4.0
	$(BIN)/python -m bench.int8 $(INT8_ARGS)

bench-rerun: install-test
	$(BIN)/python -m bench.rerun --files $(or $(FILES),500)

bench-store: install-test
	$(BIN)/python -m bench.store --points $(or $(POINTS),100000)

bench-dask: install-test
	$(BIN)/python -m bench.dask --files $(or $(FILES),100)
