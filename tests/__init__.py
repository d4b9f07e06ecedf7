"""The test suite as a package, so that tests import shared helpers as ``tests.<dir>.<module>``.

pytest then puts the repository root on the import path (tests/conftest.py is ``tests.conftest``), which
also makes ``bench`` importable.  The subdirectories have no ``__init__.py``: their test modules keep
importing the helpers beside them by name (``from _small_nets import ...``).
"""
