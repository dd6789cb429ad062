# The commands a person types. `make test` and `make demo` work on a fresh clone
# with only Python 3.11+ installed: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint bench bench-table bench-instructions bench-stores bench-peers bench-e2e bench-compiled profile clean redis

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Redis tests need a Redis on 127.0.0.1:6379 (CI has one): find it, or start one that
# keeps nothing on disk. If neither works, those tests fail loudly; they never skip.
redis: $(STAMP)
	@$(BIN)/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_connect_timeout=1).ping()" 2>/dev/null \
	  || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	  || echo "warning: no Redis on 127.0.0.1:6379 and redis-server could not start one"

test: $(STAMP) redis
	$(BIN)/ruff check chio_middleware tests examples benchmarks
	$(BIN)/mypy chio_middleware
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check chio_middleware tests examples benchmarks
	$(BIN)/mypy chio_middleware

# Benchmarks (BENCHMARKS.md says what each prints and the figures of the last run). The
# peers, uvloop and httptools come from the `bench` extra; the end-to-end test needs wrk.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) redis
	$(BIN)/python benchmarks/bench_table.py
	$(BIN)/python benchmarks/bench_stores.py
	$(BIN)/python benchmarks/bench_peers.py
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_middleware.py
	$(BIN)/python benchmarks/bench_receipt_modes.py
	$(BIN)/python benchmarks/bench_store_memory.py
	$(BIN)/python benchmarks/bench_constraints.py
	$(BIN)/python benchmarks/bench_offload.py

bench-table: $(STAMP)
	$(BIN)/python benchmarks/bench_table.py

# Instructions per request under callgrind (noise-free beside the timed table; ~5 min).
bench-instructions: $(STAMP)
	@command -v valgrind >/dev/null || { echo "bench-instructions needs valgrind (Debian: apt-get install valgrind)"; exit 1; }
	$(BIN)/python benchmarks/bench_instructions.py

bench-stores: $(STAMP) redis
	$(BIN)/python benchmarks/bench_stores.py

bench-peers: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_peers.py

# The request path compiled by Cython beside it (needs a C compiler and the Python headers;
# valgrind for the instruction columns; ~13 min).
bench-compiled: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_compiled.py

# About four minutes: 2 servers x 3 routes x bare/chio x 3 rounds of 5 s, on 127.0.0.1.
bench-e2e: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { echo "bench-e2e needs wrk (Debian: apt-get install wrk)"; exit 1; }
	$(BIN)/python benchmarks/bench_e2e.py

profile: $(STAMP)
	$(BIN)/python benchmarks/profile_request.py --config defaults --top 25
	$(BIN)/python benchmarks/profile_request.py --config benchmark --bytecodes
	$(BIN)/python benchmarks/profile_request.py --config defaults --adapter wsgi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info demo-state
