"""Test-session settings."""

import pytest
from threadpoolctl import threadpool_limits

import bilevel_envs  # noqa: F401  (registers the Gymnasium ids)


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas():
    """The suite's linear algebra is small: multi-threaded BLAS only adds contention."""
    with threadpool_limits(limits=1):
        yield
