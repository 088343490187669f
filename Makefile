# The README's two commands are `make book` and `make test`; both set up first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: setup book test demo bench wheel clean

setup:
	@echo "[setup 1/3] PyTorch 2.13, CPU build (a no-op once installed)"
	$(PIP) install --quiet --progress-bar off torch==2.13.0
	@echo "[setup 2/3] fsdiag (editable) with the test and book dependencies"
	$(PIP) install --quiet --progress-bar off -e ".[test,book]"
	@echo "[setup 3/3] the deepinv and diffusers extras, beside the CPU torch"
# deepinv needs torchvision. Left alone, pip takes the newest torchvision, which pins a newer torch
# and replaces the CPU build with a multi-GB CUDA one; naming the installed torch in the same command
# makes pip pick the torchvision built for it. PyPI's torchvision is a CUDA build whose compiled ops
# do not load beside a CPU torch: fsdiag.adapters.deepinv.import_deepinv makes `import deepinv` work anyway.
	$(PIP) install --quiet --progress-bar off -e ".[deepinv,diffusers]" "torch==$$($(PYTHON) -c 'import torch; print(torch.__version__.split("+")[0])')"

book: setup
	@echo "[book] executing the 14 chapters (CPU profile; each logs 'Executing' then its time) and building _build/html"
	jupyter-book build . -W -n --keep-going

test: setup
	@echo "[test] the test-suite: one line per file, then the slowest tests"
	$(PYTHON) -m pytest --durations=15

demo:
	$(PYTHON) -m fsdiag demo

bench:
	$(PYTHON) benchmarks/bench_fsr.py

# The wheel carries the notebooks and the book's sources (setup.py copies them into fsdiag/_book).
wheel:
	$(PIP) wheel . --no-deps -w dist

clean:
	rm -rf _build notebooks/outputs build dist
