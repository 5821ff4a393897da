# One command builds the book, one runs the tests; each sets up .venv from nothing.
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
# Pinned versions for CI; `make test CONSTRAINTS=` installs the latest releases instead.
CONSTRAINTS ?= ci/constraints.txt
STAMP       := $(VENV)/.installed
HTML        := _build/html

# Non-interactive runs: no tqdm widgets and no live ipywidgets panels in outputs.
RUN_ENV := TQDM_DISABLE=1 BNCORE_WIDGETS=0 PYDEVD_DISABLE_FILE_VALIDATION=1

.PHONY: install test lint book page test-browser browser-deps lab clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[book,test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bncore)"
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check bncore tests book

test: $(STAMP) lint
	$(RUN_ENV) $(BIN)/python -m pytest tests book -m "not browser" --nbval-lax \
		--nbval-cell-timeout=600 -p no:cacheprovider

book: $(STAMP)
	$(RUN_ENV) $(BIN)/jupyter-book build . --builder html -W --keep-going
	@echo "The book: $(abspath $(HTML))/index.html"

# Headless Chromium over every page of the built book, offline (run `make book` first).
test-browser: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || $(MAKE) browser-deps
	$(BIN)/python -m pytest tests/browser -m browser -p no:cacheprovider -v
	@echo "Screenshots: $(abspath _build/screenshots)"

# Debian's Chromium and its driver (the system browser, not a downloaded one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

# Build one page (plus the bibliography its citations link to) with the book's strict settings:
# make page PAGE=book/transform
page: $(STAMP)
	@test -n "$(PAGE)" || { echo "usage: make page PAGE=book/<chapter>"; exit 2; }
	mkdir -p _build/pages/$(notdir $(PAGE))
	printf 'format: jb-book\nroot: $(PAGE)\nchapters:\n  - file: book/bibliography\n' \
		> _build/pages/$(notdir $(PAGE))/_toc.yml
	$(RUN_ENV) $(BIN)/jupyter-book build . --builder html -W --keep-going \
		--toc _build/pages/$(notdir $(PAGE))/_toc.yml --path-output _build/pages/$(notdir $(PAGE))

lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
