"""The stages in front of a served model on a node (issue 18): the semantic cache, the input
filter and Precog's push, which the operator turns on per model (``serve --front
MODEL=FILE.yaml``) and the node installs when a device deploys that model whole.

A front is installed only on a stage that takes the model's input and gives its logits (all of
the model: a cache keyed on a middle activation would key on whatever a partition hands it);
other stages of the same model are served as before. The stages are built from what the node
trusts: the filter's reference is the stage the node traced itself, and a ``prefix:`` cache key
is read from the node's own capture of the model (its registry) with the deployed weights
loaded, never from anything a peer sent.

Each request's ``source`` is the device it names (``InferRequest.device``), else its peer
address: it keys only per-stream state (a filter's stream, the prefetcher's last class), never
anything that matters for security, and every stage bounds the number of sources it keeps.
Cache entries pushed to a device (``InferReply.prefetched``) are the edge cache's own keys and
labels: plain numbers, at most ``prefetch.budget`` and what the device asked for.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgeweave.errors import EdgeWeaveError, ServeError
from edgeweave.graph import Graph
from edgeweave.runtime.models import TrustedModels
from edgeweave.runtime.proto import edgeweave_pb2 as pb
from edgeweave.runtime.stage_store import DeployedStage
from edgeweave.serve import Engine
from edgeweave.serve.cache.config import MAX_PUSH
from edgeweave.serve.cache.prefetch import MarkovPredictor, Prefetcher
from edgeweave.serve.engine_stages import EngineCache, EngineFilter, for_engine
from edgeweave.serve.filter.online import LearningFilter
from edgeweave.serve.front_config import FrontConfig, build_front

log = logging.getLogger("edgeweave.runtime.node")

#: The most characters of a device id kept as a source.
SOURCE_CHARS = 64


def request_source(device: str, peer: str) -> str:
    """The stream a request belongs to: the device id it claims (printable, truncated), else
    the peer's address."""
    device = "".join(c for c in device[:SOURCE_CHARS] if c.isprintable())
    return f"device:{device}" if device else f"peer:{peer[:SOURCE_CHARS]}"


class _Logits(nn.Module):
    """A traced stage (which returns its outputs as a tuple) as a classifier giving logits."""

    def __init__(self, stage: torch.jit.ScriptModule):
        super().__init__()
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(x)[0]


@dataclass
class ServedFront:
    """The front of one served stage: the engine's stages and the pieces the node asks."""

    model: str
    stages: list[EngineCache | EngineFilter]
    prefetcher: Prefetcher | None = None

    def __post_init__(self) -> None:
        self.cache = next((s for s in self.stages if isinstance(s, EngineCache)), None)
        self._filter = next((s for s in self.stages if isinstance(s, EngineFilter)), None)
        self._lock = self.cache._lock if self.cache is not None else threading.Lock()

    @property
    def filter(self) -> LearningFilter | None:
        """The filter that learns each stream's cascade, if the front has one."""
        stage = self._filter.stage if self._filter is not None else None
        return stage if isinstance(stage, LearningFilter) else None

    def filter_state(self, source: str) -> str:
        """The input filter on ``source``'s stream (``InferReply.filter_state``; "" without
        a filter)."""
        return "" if self._filter is None else self._filter.state(source)

    @property
    def embed(self) -> str:
        return self.cache.cache.embedder.name if self.cache is not None else ""

    def push(self, source: str, logits: torch.Tensor, wanted: int) -> list[pb.CacheEntry]:
        """Precog: the cache entries of ``source``'s predicted next classes, now that the
        model (or the cache) answered it with ``logits``; at most ``wanted`` of them (every
        answer teaches the predictor, whether or not the device takes pushes)."""
        if self.prefetcher is None:
            return []
        label = int(logits.reshape(-1).argmax())
        with self._lock:  # the cache's lock: the prefetcher reads its entries
            entries = self.prefetcher.after(source, label, max(0, min(wanted, MAX_PUSH)))
        return [pb.CacheEntry(uid=e.uid, label=e.label, key=e.key.tolist()) for e in entries]


class NodeFronts:
    """The operator's ``--front`` settings per model, and the fronts installed per stage."""

    def __init__(self, configs: Mapping[str, FrontConfig],
                 graph: Callable[[str, Sequence[int]], Graph]):
        self.configs, self.graph = dict(configs), graph
        self.served: dict[str, ServedFront] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.configs)

    def get(self, digest: str) -> ServedFront | None:
        return self.served.get(digest)

    def forget(self, digest: str) -> None:
        with self._lock:
            self.served.pop(digest, None)

    def install(self, stage: DeployedStage, engine: Engine) -> ServedFront | None:
        """Put the configured front in front of ``stage`` if it is a whole model the operator
        named (once per stage; a re-deploy keeps it). A front that cannot be built is logged
        and the model served without it: the operator's file was checked at start, so what
        fails here is this model's shape (say, a filter on frames it cannot take)."""
        config = self.configs.get(stage.recipe.model)
        if config is None or not self._whole(stage):
            return None
        with self._lock:
            if stage.digest in self.served:
                return self.served[stage.digest]
            try:
                front = self._build(stage, config)
            except EdgeWeaveError as e:
                log.warning("--front %s: not installed on stage %s: %s", stage.recipe.model,
                            stage.digest[:12], e)
                return None
            engine.set_front(stage.digest, front.stages)
            self.served[stage.digest] = front
            log.info("front %s installed on %s (stage %s)",
                     "+".join(s.name for s in front.stages), stage.recipe.model,
                     stage.digest[:12])
            return front

    def _whole(self, stage: DeployedStage) -> bool:
        r = stage.recipe
        graph = self.graph(r.model, r.input_shape)
        return (list(r.inputs) == graph.placeholders and list(r.outputs) == graph.outputs
                and len(r.outputs) == 1 and len(stage.specs[r.outputs[0]][1]) == 2)

    def _build(self, stage: DeployedStage, config: FrontConfig) -> ServedFront:
        r = stage.recipe
        input_shape = stage.specs[r.inputs[0]][1]
        num_classes = stage.specs[r.outputs[0]][1][-1]
        embed_module = None
        if config.cache is not None and config.cache.embed.startswith("prefix:"):
            embed_module = self._trusted_copy(stage)
        stages = for_engine(build_front(config, _Logits(stage.module), input_shape,
                                        num_classes, embed_module))
        front = ServedFront(r.model, stages)
        if config.prefetch is not None and front.cache is not None:
            p = config.prefetch
            front.prefetcher = Prefetcher(front.cache.cache, MarkovPredictor(num_classes),
                                          p.top, p.budget, p.max_sources)
        return front

    def _trusted_copy(self, stage: DeployedStage) -> nn.Module:
        """The node's own capture of the model with the stage's weights: fx-traceable, so a
        ``prefix:<node>`` key can be read from its first layers."""
        r = stage.recipe
        module = copy.deepcopy(self.graph(r.model, r.input_shape).module)
        try:
            module.load_state_dict({spec.name: t for spec, t in stage.weights}, strict=True,
                                   assign=True)
        except RuntimeError as e:
            raise ServeError(f"cache.embed: cannot rebuild {r.model} from its stage's weights "
                             f"({str(e).splitlines()[0][:200]})") from None
        return module.eval()


def check_fronts(configs: Mapping[str, FrontConfig], models: TrustedModels) -> None:
    """Every ``--front`` names a model of the node's registry, and its stages can be built
    for that model at its default input (filter shapes, classes, a ``prefix:`` key's node):
    checked on an instance of the model, so a bad file stops the node at start."""
    for model, config in configs.items():
        if not models.knows(model):
            raise EdgeWeaveError(f"--front {model}: this node has no model {model!r} (it "
                                 f"knows {', '.join(models.names)}; install one with --model)")
        module, shape = models.model(model)
        with torch.inference_mode():
            out = module.eval()(torch.zeros(shape))
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise EdgeWeaveError(f"--front {model}: the model does not give one row of class "
                                 f"scores per input, so no cache or filter can stand in front "
                                 f"of it")
        try:
            build_front(config, module, shape, int(out.shape[1]))
        except ServeError as e:
            raise EdgeWeaveError(f"--front {model}: {e}") from None
