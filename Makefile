# Two entry points for a fresh machine: `make demo` (the CPU pipeline) and `make test` (the suite).
# Both create .venv in the checkout and install everything the project needs into it.

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test lint demo tour bench bench-reward bench-sampling bench-convert bench-verify clean

# Debian packages: bubblewrap isolates the tool-code sandbox; chromium is the browser of the UI test.
$(STAMP): pyproject.toml
	@command -v bwrap >/dev/null && command -v chromium >/dev/null \
		|| $(SUDO) apt-get install -y -q bubblewrap chromium \
		|| ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q bubblewrap chromium)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest

# The main job on a laptop: the full run (build, warm start, sample, GRPO, merge, evaluate, report) as a
# Prefect flow on the tiny model; it ends by printing where the report is and how to see it in `ftrl ui`.
demo: install
	$(VENV)/bin/ftrl run --config configs/cpu-demo.yaml

# A quick look at single stages on the packaged example environments (seconds).
tour: install
	$(VENV)/bin/ftrl demo --profile configs/cpu-demo.yaml

# Benchmarks print ratios against a baseline run side by side; they are never part of `make test`.
bench: bench-reward bench-sampling bench-convert bench-verify

bench-reward: install
	$(PY) bench/bench_reward.py

bench-sampling: install
	$(PY) bench/bench_sampling.py

bench-convert: install
	$(PY) bench/bench_convert.py

bench-verify: install
	$(PY) bench/bench_verify.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
