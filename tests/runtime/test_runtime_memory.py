"""The node/device allocator tuning applies on glibc and is safe to call again."""

import platform

import pytest

from edgeweave.runtime.memory import steady_allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_steady_allocator_applies_once_and_is_idempotent():
    assert steady_allocator() is True
    assert steady_allocator() is True
