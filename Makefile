# The two commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench real-speech browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hepta demo

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# Debian's Chromium, which the chat page's browser tests drive (tests/serve/test_page_browser.py), installed
# where apt-get can; elsewhere those tests skip and name this command.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } || \
		echo "could not install Debian's chromium; the page's browser tests will skip"; \
	else echo "install Debian's chromium as root (apt-get install chromium) to run the page's browser tests"; fi

bench: $(STAMP)
	$(BIN)/python benchmarks/moe_layer.py
	$(BIN)/python benchmarks/train_step.py

# Human recordings for `hepta eval --task asr-real` (report only): alsa-utils' spoken channel
# names and klettres-data's letters. Debian packages, installed where apt-get can; nothing else needs them.
real-speech:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends alsa-utils klettres-data; \
	else echo "install Debian's alsa-utils and klettres-data as root (apt-get install alsa-utils klettres-data)"; fi

clean:
	rm -rf $(VENV) runs
