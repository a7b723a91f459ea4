# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup napari-setup napari-deps demo test test-fast lint slurm-test clean

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/snakemake

# The optional napari extra (tests/stores/test_napari.py, docs/make_screenshot.py;
# about 20 s and 400 MB): where it cannot install, a note, and those tests skip
# saying so. The stamp is made only on success, so a failed install is retried.
$(VENV)/.napari-extra: $(BIN)/snakemake
	@if $(BIN)/pip install --quiet -e '.[dev,napari]'; then touch $@; \
	else echo "NOTE: the napari extra did not install; the napari tests will skip"; fi

napari-setup: $(VENV)/.napari-extra

# What napari's Qt 5 (PyQt5-Qt5 wheel) needs to draw on a virtual screen: Xvfb,
# OpenGL (Mesa), fontconfig, D-Bus and the X libraries of its xcb platform
# plugin. On the base image only xvfb, libxcb-icccm4, libxcb-keysyms1 and
# libxcb-xinerama0 are missing; only missing packages are installed (naming an
# installed one would let apt upgrade it). Root with apt-get only, else a note;
# without Xvfb the napari viewer tests skip saying so.
NAPARI_APT := xvfb libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libfontconfig1 libdbus-1-3 \
	libxkbcommon-x11-0 libx11-xcb1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0 libxcb-sync1 libxcb-glx0

napari-deps:
	@missing=$$(for p in $(NAPARI_APT); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "napari-deps: all installed"; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "NOTE: not root with apt-get; missing:" $$missing "(the napari viewer tests skip without Xvfb)"; \
	else \
		echo "napari-deps: apt-get install" $$missing; log=$$(mktemp); \
		install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; }; \
		if ! { install || { apt-get update -q && install; }; } >"$$log" 2>&1; then \
			tail -5 "$$log"; echo "NOTE: apt-get could not install:" $$missing; fi; \
		rm -f "$$log"; \
	fi

demo: setup
	$(BIN)/snakemake --cores $(CORES)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules/

test: setup napari-setup lint
	$(BIN)/pytest -q --durations=15

# Unit tests only (no workflow runs): a few minutes on 2 cores.
test-fast: setup
	$(BIN)/pytest -q -m "not slow"

# A real single-node SLURM (apt, as root) running the tiny demo with
# profiles/slurm; compared with a local run (tests/slurm/run_slurm_ci.sh).
slurm-test: setup
	tests/slurm/run_slurm_ci.sh
