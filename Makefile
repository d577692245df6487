# livesafe: `make demo` and `make test` work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install install-test demo test lint check bench bench-capacity eval demo-media clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the CPU wheel: anything that needs torch must not pull the multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	# openai-whisper without its triton requirement (GPU-only); its real needs come with the extra below.
	$(PIP) install --quiet --no-deps openai-whisper==20250625
	# The weapons extra's network code: its only requirement is torch, installed above (never pull another).
	$(PIP) install --quiet --no-deps efficientnet-lite-pytorch==0.1.0
	$(PIP) install --quiet -e '.[dev,openai-whisper,multilingual,weapons]'
	touch $(STAMP)

install: $(STAMP)

# The test environment also carries the optional extras the suite exercises (NudeNet is AGPL-3.0 by its
# LICENSE file, so the default install never pulls it in).
TEST_STAMP := $(VENV)/.installed-test
$(TEST_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[dev,openai-whisper,multilingual,weapons,nudenet]'
	touch $(TEST_STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(VENV)/bin/livesafe demo

test: install-test
	$(VENV)/bin/pytest

lint: install-test
	$(VENV)/bin/ruff check livesafe tests scripts examples
	$(VENV)/bin/mypy

check: lint test

# Speed figures, with a short capacity scan (levels 1,4,8 for 30 s each: a few minutes more).
bench: install
	$(PY) scripts/bench.py --capacity 1,4,8 --capacity-duration 30

# The full capacity scan (levels 1..24, 60 s each, stopping at the first that falls behind); JSON in
# .livesafe/. More options: make bench-capacity CAPACITY_ARGS="--streams 8 --soak"
CAPACITY_ARGS ?=
bench-capacity: install
	mkdir -p .livesafe
	$(VENV)/bin/livesafe bench capacity --json .livesafe/bench-capacity.json $(CAPACITY_ARGS)

# Precision/recall/F1 per category and WER on ../shared/data (a few minutes).
eval: install
	$(VENV)/bin/livesafe eval

# Regenerate the bundled demo streams (needs Debian's espeak-ng).
demo-media: install
	$(PY) scripts/make_demo_media.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
