"""Report tests read outputs of real runs (data/, see its README) as a user's results."""

import shutil
from pathlib import Path

import pytest
from report_helpers import DATA


@pytest.fixture
def data(tmp_path) -> Path:
    """A private copy of the real runs' outputs, free to damage."""
    return Path(shutil.copytree(DATA, tmp_path / "data"))
