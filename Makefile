# The commands a person types. `make test` and `make demo` work on a fresh clone
# with only Python 3.11+ installed: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint bench clean redis

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

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_middleware.py
	$(BIN)/python benchmarks/bench_receipt_modes.py
	$(BIN)/python benchmarks/bench_store_memory.py
	$(BIN)/python benchmarks/bench_constraints.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info demo-state
