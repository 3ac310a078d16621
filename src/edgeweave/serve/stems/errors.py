"""The error shared stems and stream-configuration adaptation raise on purpose."""

from __future__ import annotations

from edgeweave.errors import EdgeWeaveError


class TenancyError(EdgeWeaveError):
    """A multi-tenant serving choice was given something it cannot honour: a budget or capacity
    that is not positive, an unknown tenant or stream, a depth or configuration out of range, a
    malformed stem specifier, or a budget too small to serve every tenant at all. The message
    names the field at fault and what was expected."""
