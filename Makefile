# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow test-gpu bench lint docs figures qgis-deps qgis-plugin test-qgis

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/geo-ppp demo --out demo_out --overwrite

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu -rs

bench: setup
	$(BIN)/python benchmarks/digits_constraints.py
	$(BIN)/python benchmarks/optimizer_step_cost.py

lint: setup
	$(BIN)/ruff check geo_ppp tests benchmarks scripts docs/hooks

# the documentation site, offline and strict (a broken link, missing page or table fails it) -> site/
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# the docs' figures from real outputs: the demo (if demo_out/ is missing), its quicklook, QGIS's own
# render of the styled map, the benchmark and prior sheets -> docs/assets/
figures: setup
	$(BIN)/python scripts/figures.py --demo-out demo_out

# Debian's QGIS for the QGIS tests (as root or with sudo), then .venv-deepness (QGIS's Python with
# the QGIS Deepness plugin's pinned onnxruntime/opencv/numpy) for tests/test_deepness.py; CI runs
# the same scripts
qgis-deps:
	bash .ci/install-qgis
	bash .ci/install-deepness

# the installable QGIS plugin: dist/geo_ppp_qgis.zip
qgis-plugin: setup
	$(BIN)/python qgis_plugin/build.py --out dist/geo_ppp_qgis.zip

test-qgis: setup
	$(BIN)/python -m pytest -q -m qgis -rs
