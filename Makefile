# Two commands do everything on a fresh Debian 12 machine: `make demo` and `make test`.
# Each installs what is missing: Debian's QGIS 3.22 (system Python 3.11) and a virtualenv that sees it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYS_PY := /usr/bin/python3
APT_PACKAGES := python3-qgis qgis-providers xvfb python3-venv
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all system venv demo test bench quality-model qgis screenshot desktop plugin clean

all: test

# QGIS only imports in Debian's /usr/bin/python3; install it when it is missing.
system:
	@$(SYS_PY) -c "import qgis.core" 2>/dev/null || { \
	  echo "Installing QGIS 3.22 from Debian (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }

$(VENV)/.installed: requirements.txt | system
	@test -x $(PY) || $(SYS_PY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m engine demo --out demo_output

# Two test processes, each module's tests in one of them (its module-scoped fixtures are made once): many tests wait
# on an engine or worker subprocess, which the other process fills (12 minutes on a 2-core Intel Xeon, CPU model 207; 26 in one process with heavier test networks).
test: venv
	$(PY) -m pytest -q -n 2 --dist loadscope tests

bench: venv
	$(PY) benchmarks/detect_bench.py
	$(PY) benchmarks/plugin_bench.py
	$(PY) benchmarks/finetune_bench.py
	$(PY) benchmarks/generate_bench.py
	$(PY) benchmarks/batch_bench.py

# The heavier model the dock offers beside the default once made here: the bundled U-Net and the paper's DeepLabV3-R50,
# pretrained on synthetic scenes (20-30 min on a 2-core CPU), as one model (docs/benchmark_ensemble_r50.md).
# Made, not bundled: 87 MB, and 23-32 times the U-Net's time a tile (the bundled pairing: 3.5 times) on a 2-core Xeon (docs/benchmarks_xeon_quality_model.md).
quality-model: venv
	$(PY) -m engine pretrain --data synthetic --architecture deeplabv3 --encoder resnet50 --out checkpoints/synthetic_dlv3r50_25m.safetensors
	$(PY) -m engine ensemble resources/models/slick_unet_r18_25m.safetensors checkpoints/synthetic_dlv3r50_25m.safetensors \
	  --name "Slick U-Net R18 + DeepLabV3-R50 25 m (heavier, real SAR texture + synthetic)"

# Desktop QGIS with the plugin loaded from this checkout (development).
qgis: desktop
	$(PY) tools/qgis_dev.py

# docs/qgis_desktop.png: the real QGIS window after a detection from the dock, on a virtual screen.
screenshot: desktop
	$(PY) tools/desktop_screenshot.py --model resources/models/evaluation/slick_unet_r18_dlv3r18_25m_pool.safetensors

desktop: venv
	@command -v qgis >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qgis; }

plugin:
	$(SYS_PY) build.py

clean:
	rm -rf dist demo_output .pytest_cache
