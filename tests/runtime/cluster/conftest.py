"""Cluster runtime fixtures."""

import pytest
from cluster_helpers import Workers


@pytest.fixture
def workers():
    pool = Workers()
    try:
        yield pool
    finally:
        pool.close()
