# One command builds the book, one runs the tests; each sets up .venv from nothing.
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
# The lock of every version CI uses, pip and the build backend (setuptools) included: `make lock`
# regenerates it from pyproject.toml and ci/constraints.txt; bncore itself is built without
# isolation, with the locked setuptools. `make test CONSTRAINTS=` takes the latest releases.
CONSTRAINTS ?= ci/requirements.lock
STAMP       := $(VENV)/.installed
HTML        := _build/html

# Non-interactive runs: no tqdm widgets and no live ipywidgets panels in outputs; one OpenMP
# thread per process, since nbval runs two kernels on the two cores (two threads each would
# oversubscribe them, and spinning threads then cost several times the CPU).
RUN_ENV := TQDM_DISABLE=1 BNCORE_WIDGETS=0 PYDEVD_DISABLE_FILE_VALIDATION=1 OMP_NUM_THREADS=1

PYTEST    := $(RUN_ENV) $(BIN)/python -m pytest -p no:cacheprovider
NOTEBOOKS := $(wildcard book/*.ipynb)
# nbval on both cores, a notebook's cells kept on one worker; ci/nbcache.py keeps each
# execution for the book build, so that a CI run executes every notebook once. Files are handed
# out in the order given (not by test count), so the chapters, the longest units, go first and
# the many short test files fill in at the end.
NBVAL     := PYTHONPATH=ci $(PYTEST) -p nbcache --nbval-lax --nbval-cell-timeout=600 \
	-n 2 --dist loadfile --no-loadscope-reorder

.PHONY: install unit test lint types lock book page test-browser browser-deps lab clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) pip setuptools
	$(BIN)/python -m pip install --quiet --no-build-isolation $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) \
		-e '.[book,test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bncore)"
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check bncore tests book ci

types: $(STAMP)
	$(BIN)/mypy

# The unit tests alone: no notebooks, no browser, nothing marked slow (the throwaway book builds,
# the kernel-driven nbcache check); `make test` runs those too.
unit: $(STAMP)
	$(PYTEST) tests -m "not browser and not slow" -n 2

# Lint, types, the unit tests and every notebook under nbval, in one run on both cores.
test: $(STAMP) lint types
	$(NBVAL) $(NOTEBOOKS) tests -m "not browser"

# Regenerate the lock after changing a dependency in pyproject.toml (only pip-tools needed, so
# it works when the old lock no longer installs). Pins that still fit are kept;
# `make lock LOCKFLAGS=--upgrade` moves every package to its latest allowed release.
LOCKFLAGS ?=
lock:
	test -x $(BIN)/pip-compile || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
		$(BIN)/python -m pip install --quiet -c ci/requirements.lock pip-tools; }
	$(BIN)/pip-compile --quiet --strip-extras --extra book --extra test -c ci/constraints.txt \
		--allow-unsafe --build-deps-for editable --no-emit-find-links --no-emit-index-url \
		$(LOCKFLAGS) -o ci/requirements.lock pyproject.toml

# Executes (nbval, both cores) only the notebooks that `make test` has not just executed in
# this environment, then builds from the cache; the build executes anything still missing.
book: $(STAMP)
	@missing=$$($(RUN_ENV) $(BIN)/python ci/nbcache.py prepare $(NOTEBOOKS)); \
	if [ -n "$$missing" ]; then \
		echo "Executing: $$missing"; \
		$(NBVAL) $$missing && $(RUN_ENV) $(BIN)/python ci/nbcache.py prepare $(NOTEBOOKS) >/dev/null; \
	else echo "Every notebook has an execution under the current environment key."; fi
	$(RUN_ENV) $(BIN)/jupyter-book build . --builder html -W --keep-going
	@echo "The book: $(abspath $(HTML))/index.html"

# Headless Chromium over every page of the built book, offline (run `make book` first).
test-browser: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || $(MAKE) browser-deps
	$(BIN)/python -m pytest tests/browser -m browser -p no:cacheprovider -v; status=$$?; \
		cat _build/screenshots/layout.txt 2>/dev/null; \
		echo "Screenshots: $(abspath _build/screenshots)"; exit $$status

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

# The batch-norm benchmark, not a test: every implementation against torch's kernel, JSON and a
# plot under _build/bench/ (GPU when present). make bench BENCH_ARGS=--quick for a small run.
.PHONY: bench
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bncore.experiments.bench $(BENCH_ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
