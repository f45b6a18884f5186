"""What tests/ and benchmarks/ share: test scaffolding, not product code (so not under analysis/, and not
packaged: pyproject's setuptools `include` names analysis and app only).

tests/ and benchmarks/ used to import each other (tests/test_faults.py ran the fault harness of
benchmarks/bench_faults.py; bench_faults and bench_load took their data helpers from tests/), so neither
could change without the other. Both import from here instead, and neither imports the other
(tests/test_architecture.py checks it).

Importable the way tests/ and benchmarks/ already are: from the checkout's root on sys.path, which
`python -m pytest` (Makefile's `make test`) and pyproject's pytest `pythonpath` provide, and which the
benchmarks insert themselves.
"""
