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


class ReportError(EdgeWeaveError):
    """A results file given to `edgeweave report` cannot be read (missing, corrupt, unknown, or
    from a newer EdgeWeave); the report still shows what could be read. `path` is the file at
    fault, when one is."""

    def __init__(self, message: str, path: object = None):
        super().__init__(message)
        self.path = path


class ServeError(EdgeWeaveError):
    """A serving setting (batching knobs, deadline, priority, load generator option) or a stage
    in front of a served model (semantic cache, input filter) or what it was given is malformed:
    out of range, inconsistent, an empty stream, a frame that does not fit the model, a corrupt
    cache entry. The message names the field, flag or input at fault and what is expected."""


class SimError(EdgeWeaveError):
    """A simulation scenario is malformed, or a simulation or sweep cannot run as asked."""


def first_line(exc: BaseException) -> str:
    """An exception in one line for a message: its first line, or its type when it has no text
    (a peer's or a library's multi-line dump must not flood an error meant for a user)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
