# Two commands on a fresh machine: `make demo` (set up, then run the main job) and `make test`
# (set up, then run the tests). Both create .venv on first use and are no-ops the second time.
PY      := .venv/bin/python
STAMP   := .venv/.toolkit-setup
TORCH   ?= torch==2.13.0
TASK    ?= sentiment
STRONG  ?= smollm2-135m
WEAK    ?= minilm-l6

.PHONY: setup demo test lint clean-cache
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	# Keep an already-installed torch (e.g. a CUDA build) untouched; otherwise take the CPU wheel.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m toolkit.models install minilm-l6 smollm2-135m
	$(PY) -m toolkit.tasks fetch
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m toolkit.compare --task $(TASK) --weak $(WEAK) --strong $(STRONG) --out runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15
	$(PY) -m ruff check toolkit tests benchmarks

lint: setup
	$(PY) -m ruff check toolkit tests benchmarks

clean-cache:
	rm -rf cache/features cache/runs
