# The README's two commands are `make book` and `make test`; both set up first.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: setup book test demo bench clean

setup:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test,book]"

book: setup
	jupyter-book build . -W -n --keep-going

test: setup
	$(PYTHON) -m pytest -q

demo:
	$(PYTHON) -m fsdiag demo

bench:
	$(PYTHON) benchmarks/bench_fsr.py

clean:
	rm -rf _build notebooks/outputs
