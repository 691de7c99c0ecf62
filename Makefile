# Every target sets up what it needs: a local .venv with the project and its pinned
# dependencies (constraints.txt pins torch==2.13.0, the CPU build on this machine's disk).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup demo test test-thorough lint gradcheck docs serve-docs bench bench-docs bench-decode \
	bench-cuda gpu-check agreement-errors modern-errors hf-agreement clean

setup: $(STAMP)

# pip prints each package as it collects and installs it: a fresh clone downloads torch (CPU),
# so the first run takes a few minutes; later runs skip this step until setup.cfg changes.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@echo "==> [1/2] creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/2] installing npattn (editable) with its extras test, docs, bench, dev:"
	@echo "    numpy, torch (CPU), safetensors, transformers, hypothesis, pytest,"
	@echo "    mkdocs-material, matplotlib, threadpoolctl, ruff; pinned by constraints.txt"
	@echo "    (a few minutes)"
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[test,docs,bench,dev]'
	@echo "==> done: $(VENV) is ready"
	touch $@

demo: $(STAMP)
	$(PY) -m npattn demo

gradcheck: $(STAMP)
	$(PY) -m npattn gradcheck

test: $(STAMP)
	@echo "==> collecting the tests (imports numpy, torch and hypothesis: about half a minute)"
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -n 2 $(PYTEST_ARGS)

# The site is built into site/ and opens from disk (site/index.html): no server, no network.
docs: $(STAMP)
	@echo "==> building the site into site/: runs every example and draws the figures (a minute)"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

serve-docs: $(STAMP)
	@echo "==> building the site into site/: runs every example and draws the figures (a minute)"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

# Benchmarks write bench-results/ (git-ignored); `make bench-docs` rewrites the site's pages in
# docs/benchmarks/. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for these commands only: on
# some machines they pin an older, slower OpenBLAS kernel (the tests keep them).
BENCH_ENV := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
bench: $(STAMP)
	$(BENCH_ENV) $(PY) benchmarks/bench.py $(BENCH_ARGS)

bench-docs: $(STAMP)
	$(BENCH_ENV) $(PY) benchmarks/bench.py --write-docs $(BENCH_ARGS)
	$(BENCH_ENV) $(PY) benchmarks/long_context.py --write-docs

# Decoding one token at a time after a 512-token prompt, one layer: npattn with and without the
# KV cache, torch_port, and a torch class in the book's KV-cache style; then npattn's profile.
bench-decode: $(STAMP)
	@mkdir -p bench-results
	$(BENCH_ENV) $(PY) benchmarks/decode.py --profile --out bench-results/decode.md $(BENCH_ARGS)

bench-cuda: $(STAMP)
	$(PY) benchmarks/bench.py --device cuda --quick $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

gpu-check: $(STAMP)
	PYTHONPATH=. $(PY) tools/gpu_check.py

agreement-errors: $(STAMP)
	PYTHONPATH=.:tests $(PY) tools/agreement_errors.py

# The float64 table of the modern classes and ops: npattn vs torch_port and vs torch autograd.
modern-errors: $(STAMP)
	PYTHONPATH=.:tests $(PY) tools/modern_errors.py

# The float64 table of torch_port.hf's layers against Hugging Face transformers, per family.
hf-agreement: $(STAMP)
	PYTHONPATH=.:tests $(PY) tools/hf_agreement.py

clean:
	rm -rf $(VENV) site build bench-results *.egg-info .pytest_cache .hypothesis
