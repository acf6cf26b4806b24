PYTHON ?= python
ACETEST_DATA ?= ../shared/acetest-data
export OMP_NUM_THREADS=1
export MKL_NUM_THREADS=1
export TF_CPP_MIN_LOG_LEVEL=2

.PHONY: install test typecheck test-fast bench bench-quick bench-upstream bench-parity baseline clean

install:
	$(PYTHON) -m pip install -e '.[test,ray]'

test:
	$(PYTHON) -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup --durations=15 tests

typecheck:
	$(PYTHON) -m mypy

bench:
	$(PYTHON) -m acetest_ml.bench --config benchmarks/apis.yaml --acetest-data $(ACETEST_DATA) --publish

bench-quick:
	$(PYTHON) -m acetest_ml.bench --config benchmarks/apis.yaml --quick --acetest-data $(ACETEST_DATA)

bench-upstream:
	$(PYTHON) -m acetest_ml.bench --upstream --config benchmarks/apis.yaml --acetest-data $(ACETEST_DATA) --publish

bench-parity:
	$(PYTHON) -m acetest_ml.bench --upstream --parity --rounds 60 --seeds 2 --config benchmarks/apis.yaml --acetest-data $(ACETEST_DATA) --publish

baseline:
	$(PYTHON) benchmarks/engine_baseline.py

clean:
	rm -rf runs build *.egg-info
