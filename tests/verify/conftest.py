import pytest

from prefix_rft.verify import MathVerifier


@pytest.fixture(scope="session")
def verifier():
    """Default settings, shared: starting worker processes costs about half a second each."""
    with MathVerifier() as shared:
        yield shared
