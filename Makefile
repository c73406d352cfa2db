# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo
DEMO_ARGS ?=

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[cuda12,dev]' > $(VENV)/install.log 2>&1 \
		|| { grep -v '^WARNING: Location' $(VENV)/install.log; exit 1; }
	$(PY) -c "import hbseg, nvidia.dali, segmentation_models_pytorch"
	touch $(STAMP)

install: $(STAMP)

# Synthetic hands, training with DALI on CPU, submission, pictures, loader benchmark and a
# summary: hbseg/demo.py. `make demo DEMO_ARGS="--seed 3 --no-bench"` passes options on.
demo: $(STAMP)
	$(PY) -m hbseg.demo --out $(DEMO) $(DEMO_ARGS)

# CI runs this. The full suite, slow end-to-end cases included; only GPU tests skip. One
# process per core, a test file to a process (its module fixtures are made once).
test: $(STAMP)
	$(VENV)/bin/ruff check hbseg tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check hbseg tests

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
