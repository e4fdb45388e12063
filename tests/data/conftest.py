import pytest


@pytest.fixture
def quiet():
    """fit() keyword arguments for a fast, silent run that writes nothing."""
    return dict(verbose=False, logger=False, enable_report=False, enable_checkpointing=False)
