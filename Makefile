# Two entry points: `make app` (set up, prepare data and default model, serve the app)
# and `make test` (set up, run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test install lock clean-venv

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: a looser spec can pull a multi-GB CUDA build
	$(PY) -m pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

app: install
	$(PY) -m analysis.cli prepare
	$(PY) -m analysis.cli train
	$(PY) -m analysis.cli warm
	# PASSIVE: torch's OpenMP threads sleep instead of spinning while they wait, so a browser on the same
	# cores does not stall them (a lab CURE run in Chromium on 2 cores: 136 s of steps spinning, 68 s passive)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/streamlit run streamlit_app.py --server.address 127.0.0.1 --server.headless true

test: install
	$(PY) -m pytest -q

# Regenerate the lock from the current environment (after changing pyproject.toml).
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^cure-explorer' > requirements.lock
