import pytest


@pytest.fixture(autouse=True)
def _backbone_tests_use_one_thread(one_thread):
    """Backbone tests run many small ops: the shared one_thread fixture (tests/conftest.py)."""
    yield
