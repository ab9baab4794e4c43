# The README's commands. Every target creates or reuses the environment in .venv/ first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Every release of the environment, not only the top-level pins (make lock writes it).
LOCK := -c requirements-lock.txt
pin = $(shell grep -E '^$(1)([=<>]|$$)' requirements.txt)

.PHONY: env lock demo demo-baseline test bench study ablation scratch compat newest deploy timm-reference clean-env

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-lock.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(LOCK) '$(call pin,setuptools)' $(call pin,ninja) $(call pin,wheel)
	$(BIN)/pip install -q $(LOCK) '$(call pin,torch)'
	# mmcv has no wheel for this torch: build its compiled ops (NMS, RoIAlign) from source once;
	# pip's wheel cache makes every later environment take seconds.
	MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$$(nproc) $(BIN)/pip install $(LOCK) --no-build-isolation '$(call pin,mmcv)'
	$(BIN)/pip install -q $(LOCK) -r requirements.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	$(BIN)/python -c "from mmcv.ops import nms, RoIAlign; import mmdet, mmdet_sk"
	touch $@

lock: env
	# The header comment is kept; torch loses its local version (+cpu), which only PyTorch's CPU
	# index serves, so the lock resolves on any index (pip still prefers the +cpu build it sees).
	{ sed '/^[^#]/,$$d' requirements-lock.txt; \
	  $(BIN)/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > requirements-lock.txt.new
	mv requirements-lock.txt.new requirements-lock.txt

# The SK detector the from-scratch experiment chose (docs/sk_scratch.json), trained and tested on
# the demo set, its mAP printed beside the experiment's paired result; demo-baseline: its plain
# counterpart.
demo: env
	$(BIN)/python tools/run_demo.py

demo-baseline: env
	$(BIN)/python tools/run_demo.py --baseline

test: env
	$(BIN)/python -m pytest tests

# The seeded SK study (hours on 2 cores; finished runs are kept and skipped when run again).
study: env
	$(BIN)/python tools/analysis_tools/sk_study.py

# Which SK to use: the paired ablation of SK's forms and places (hours; finished runs are kept,
# a cut-off one resumes). ABLATION_ARGS, e.g. --p-checkpoint work_dirs/faster-rcnn_r18_fpn_shapes/iter_500.pth
ablation: env
	$(BIN)/python tools/analysis_tools/sk_ablation.py $(ABLATION_ARGS)

# SK trained from scratch, where it is the architecture: SKNet-18 and SK R-18 against ResNet-18
# (Faster R-CNN), YOLOX-tiny with SK against without, paired seeds (hours; finished runs are
# kept, a cut-off one resumes). SCRATCH_ARGS, e.g. --families yolox, or --report
scratch: env
	$(BIN)/python tools/analysis_tools/sk_scratch.py $(SCRATCH_ARGS)

bench: env
	$(BIN)/python tools/analysis_tools/benchmark_sk.py
	$(BIN)/python tools/analysis_tools/benchmark_detector.py

# The suite on the older stack most MMDetection 3.3 users have (requirements-compat.txt:
# torch 2.1 + mmcv 2.1.0 with compiled ops + mmengine 0.10.4) in .venv-compat/; not part of CI.
# mmcv is built into the environment's own wheelhouse, never from pip's cache, which holds the
# wheel built against .venv's torch. The same recipe builds any other stack: COMPAT (the
# environment's folder), COMPAT_REQS (its requirements file), COMPAT_PY (its Python), e.g.
#   make compat COMPAT=.venv-py310 COMPAT_PY=python3.10
COMPAT ?= .venv-compat
COMPAT_REQS ?= requirements-compat.txt
COMPAT_PY ?= $(PY)
CBIN := $(COMPAT)/bin
cpin = $(shell grep -E '^$(1)([=<>;]|$$)' $(COMPAT_REQS))
# mmcv 2.1.0's setup.py compiles its ops with -std=c++17; torch >= 2.14's headers need C++20.
# MMCV_CXX_STD=c++20 builds from mmcv's sdist with that one flag changed.
MMCV_CXX_STD ?=
ifeq ($(MMCV_CXX_STD),)
mmcv_fetch = true
mmcv_src = '$(call cpin,mmcv)'
else
mmcv_fetch = rm -rf $(COMPAT)/src && $(CBIN)/pip download -q --no-deps --no-binary mmcv \
	  --no-build-isolation -d $(COMPAT)/src '$(call cpin,mmcv)' && tar xzf $(COMPAT)/src/mmcv-*.tar.gz \
	  -C $(COMPAT)/src && sed -i 's/-std=c++17/-std=$(MMCV_CXX_STD)/' $(COMPAT)/src/mmcv-*/setup.py
mmcv_src = $(COMPAT)/src/mmcv-*/
endif

compat: $(COMPAT)/.installed
	$(CBIN)/python -m pytest tests

$(COMPAT)/.installed: $(COMPAT_REQS) setup.py
	test -x $(CBIN)/python || $(COMPAT_PY) -m venv $(COMPAT)
	$(CBIN)/pip install -q --upgrade pip
	$(CBIN)/pip install -q '$(call cpin,setuptools)' $(call cpin,ninja) $(call cpin,wheel)
	$(CBIN)/pip install -q '$(call cpin,torch)' '$(call cpin,numpy)'
	ls $(COMPAT)/wheelhouse/mmcv-*.whl 2>/dev/null || { $(mmcv_fetch) && MMCV_WITH_OPS=1 \
	  FORCE_CUDA=0 MAX_JOBS=$$(nproc) $(CBIN)/pip wheel --no-cache-dir --no-deps \
	  --no-build-isolation -w $(COMPAT)/wheelhouse $(mmcv_src); }
	$(CBIN)/pip install -q -c $(COMPAT_REQS) $(COMPAT)/wheelhouse/mmcv-*.whl
	$(CBIN)/pip install -q -r $(COMPAT_REQS)
	$(CBIN)/pip install -q --no-build-isolation --no-deps -e .
	$(CBIN)/python -c "from mmcv.ops import nms, RoIAlign; import mmdet, mmdet_sk"
	touch $@

# The newest torch this machine's pip serves (requirements-newest.txt: torch 2.14.1, a CUDA build
# that runs on the CPU, + torchvision 0.29.1, mmcv 2.1.0's ops compiled against it) in
# .venv-newest/: the suite where users with today's torch are. Not part of CI.
newest:
	$(MAKE) compat COMPAT=.venv-newest COMPAT_REQS=requirements-newest.txt MMCV_CXX_STD=c++20

# MMDeploy 1.3.1 with ONNX Runtime 1.15.1 (its custom ops' release) over torch 2.1.2
# (requirements-deploy.txt) in .venv-deploy/, and the suite there (docs/deploy.md). Not part of CI.
deploy:
	$(MAKE) compat COMPAT=.venv-deploy COMPAT_REQS=requirements-deploy.txt

# The reference SKNet's tests compare with (tests/data/timm_sknet_reference.pth), written by timm
# itself, which imports only in the compat stack (torchvision).
timm-reference: $(COMPAT)/.installed
	$(CBIN)/python tools/misc/timm_sknet_reference.py

clean-env:
	rm -rf $(VENV) $(COMPAT) .venv-newest .venv-deploy
