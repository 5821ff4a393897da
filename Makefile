# One command builds the book, one runs the tests; each sets up .venv from nothing.
PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
CONSTRAINTS := ci/constraints.txt
STAMP       := $(VENV)/.installed
HTML        := _build/html

# Non-interactive runs: no tqdm widgets and no live ipywidgets panels in outputs.
RUN_ENV := TQDM_DISABLE=1 BNCORE_WIDGETS=0 MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1

.PHONY: install test lint book page lab clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[book,test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bncore)"
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check bncore tests book

test: $(STAMP) lint
	$(RUN_ENV) $(BIN)/python -m pytest tests book --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider

book: $(STAMP)
	$(RUN_ENV) $(BIN)/jupyter-book build . --builder html -W --keep-going
	@echo "The book: $(abspath $(HTML))/index.html"

# Build one page alone with the book's strict settings: make page PAGE=book/transform
page: $(STAMP)
	@test -n "$(PAGE)" || { echo "usage: make page PAGE=book/<chapter>"; exit 2; }
	mkdir -p _build/pages/$(notdir $(PAGE))
	printf 'format: jb-book\nroot: $(PAGE)\n' > _build/pages/$(notdir $(PAGE))/_toc.yml
	$(RUN_ENV) $(BIN)/jupyter-book build . --builder html -W --keep-going \
		--toc _build/pages/$(notdir $(PAGE))/_toc.yml --path-output _build/pages/$(notdir $(PAGE))

lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build
