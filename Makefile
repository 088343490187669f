# The README's two commands are `make book` and `make test`; both set up first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: setup book test demo bench wheel clean

setup:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test,book]"
# deepinv needs torchvision. Left alone, pip takes the newest torchvision, which pins a newer torch
# and replaces the CPU build with a multi-GB CUDA one; naming the installed torch in the same command
# makes pip pick the torchvision built for it. PyPI's torchvision is a CUDA build whose compiled ops
# do not load beside a CPU torch: fsdiag.deepinv.import_deepinv makes `import deepinv` work anyway.
	$(PIP) install --quiet -e ".[deepinv]" "torch==$$($(PYTHON) -c 'import torch; print(torch.__version__.split("+")[0])')"

book: setup
	jupyter-book build . -W -n --keep-going

test: setup
	$(PYTHON) -m pytest -q

demo:
	$(PYTHON) -m fsdiag demo

bench:
	$(PYTHON) benchmarks/bench_fsr.py

# The wheel carries the notebooks and the book's sources (setup.py copies them into fsdiag/_book).
wheel:
	$(PIP) wheel . --no-deps -w dist

clean:
	rm -rf _build notebooks/outputs build dist
