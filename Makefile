# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo
DEMO_IDS  ?= 8
DEMO_SIZE ?= 256

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[cuda12,dev]' > $(VENV)/install.log 2>&1 \
		|| { grep -v '^WARNING: Location' $(VENV)/install.log; exit 1; }
	$(PY) -c "import hbseg, nvidia.dali, segmentation_models_pytorch"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hbseg-data synth $(DEMO)/data --ids $(DEMO_IDS) --size $(DEMO_SIZE) --test-ids 1 --seed 0 --overwrite
	$(VENV)/bin/hbseg-data cache $(DEMO)/data
	$(VENV)/bin/hbseg-train --data $(DEMO)/data --loader dali --device cpu --arch unet --encoder resnet18 \
		--size $(DEMO_SIZE) --batch-size 4 --epochs 3 --workers 2 --out $(DEMO)/run --overwrite
	$(VENV)/bin/hbseg-infer --checkpoint $(DEMO)/run/best.pt --data $(DEMO)/data/test \
		--out $(DEMO)/submission.csv --overlays $(DEMO)/overlays
	@echo "demo done: see $(DEMO)/run (metrics, curves), $(DEMO)/submission.csv, $(DEMO)/overlays"

# CI runs this. The full suite, slow end-to-end cases included; only GPU tests skip.
test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check hbseg tests

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
