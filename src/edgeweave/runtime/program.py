"""A stage as a deployable program: TorchScript bytes keyed by their content hash.

Why TorchScript: the program must cross a process (and trust) boundary without Python pickle.
A TorchScript archive is loaded by TorchScript's own C++ loader, which builds only TorchScript
values (tensors, TorchScript code), never arbitrary Python objects. `torch.export`'s archive
was the other candidate, but its loader falls back to `torch.load(weights_only=False)` and plain
`pickle.loads` for some entries, which is exactly what we must not run on received bytes.
Deploy is also authenticated (bearer token or mutual TLS), so only a trusted client can ship one.

Stages are traced with the real activations that reach them, so a program is specialised to
the model's input shape, as a deployed co-inference plan is.
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from edgeweave.errors import EdgeWeaveError
from edgeweave.graph import Stage


class ProgramError(EdgeWeaveError):
    """A stage program cannot be built, verified or loaded."""


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StageProgram:
    """What Deploy carries: the program bytes and the value names it consumes and produces."""

    name: str
    data: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def digest(self) -> str:
        return digest_of(self.data)


def build_program(stage: Stage, example_args: tuple[Any, ...]) -> StageProgram:
    """Trace `stage.module` on the values that really reach it and serialise it."""
    if not all(isinstance(a, torch.Tensor) for a in example_args):
        kinds = ", ".join(type(a).__name__ for a in example_args)
        raise ProgramError(
            f"stage {stage.key!r} receives non-tensor values ({kinds}); only tensors can cross "
            "a cut on the wire: move the cut so it does not split shape arithmetic"
        )
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice, once per stage
        traced = torch.jit.trace(stage.module, example_args, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return StageProgram(stage.key, buf.getvalue(), tuple(stage.inputs), tuple(stage.outputs))


def load_program(data: bytes, digest: str) -> tuple[torch.jit.ScriptModule, float]:
    """Verify `digest` and load the program; returns the module and the load time in ms."""
    actual = digest_of(data)
    if actual != digest:
        raise ProgramError(f"program digest mismatch: announced {digest[:12]}, got {actual[:12]}")
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as e:  # the loader raises many types on malformed archives
        raise ProgramError(f"malformed stage program ({type(e).__name__}): "
                           f"{str(e).splitlines()[0][:200]}") from None
    module.eval()
    return module, (time.perf_counter() - start) * 1000.0
