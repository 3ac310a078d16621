"""One exception hierarchy, so a caller (or the CLI) can catch EdgeWeave's own complaints
and show them without a traceback, while real bugs still surface as tracebacks."""

from __future__ import annotations


class EdgeWeaveError(Exception):
    """Base of every error EdgeWeave raises on purpose; the message says what and where."""


class FleetError(EdgeWeaveError):
    """A fleet description (YAML file, trace CSV) is malformed or inconsistent."""


class ModelError(EdgeWeaveError):
    """A model specifier cannot be resolved, loaded or captured."""


class GraphError(EdgeWeaveError):
    """A graph operation (split, placement) was given something it cannot honour."""


class ProfileError(EdgeWeaveError):
    """A profile cannot be measured, saved or loaded."""


class PlanError(EdgeWeaveError):
    """No plan satisfies the request (objective, SLO, memory limit) or the request is malformed."""


class SimError(EdgeWeaveError):
    """A simulation scenario is malformed, or a simulation or sweep cannot run as asked."""
