"""Turning the cache and the filter on for a served model: a YAML file or command-line flags.

The file has up to two sections, each a stage in front of the model (the filter first: it is
the cheaper, and a frame it skips needs no cache lookup)::

    filter:               # NoScope/FFS-VA cascade, learnt per stream (serve.filter.online)
      positive: [1, 2]    # the model's classes that count as an object (required)
      max_fn: 0.01
    cache:                # FoggyCache/Cachier semantic cache (serve.cache.semantic)
      threshold: 0.8
      k: 5
    prefetch:             # Precog: push the edge cache's entries to devices (needs cache)
      budget: 16

``cache: {}`` (or ``cache: true``) turns the cache on with its defaults. The flags
``--cache k=3,threshold=0.7`` and ``--filter positive=[1,2],max_fn=0.02`` say the same per
section and override the file's fields. Every error names the file or flag and the field.
On a node, ``serve --front MODEL=FILE.yaml`` (or ``MODEL={cache: {k: 3}}``, the document
inline) turns them on for a model of the node's registry (:func:`front_flag`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from edgeweave.errors import ServeError
from edgeweave.serve.cache.config import CacheConfig, PrefetchConfig
from edgeweave.serve.cache.embed import make_embedder
from edgeweave.serve.cache.semantic import SemanticCache
from edgeweave.serve.filter.config import FilterConfig
from edgeweave.serve.filter.online import LearningFilter
from edgeweave.serve.stage import FrontStage

SECTIONS = ("cache", "filter", "prefetch")


@dataclass(frozen=True)
class FrontConfig:
    """The stages to put in front of one served model (None: that stage is off)."""

    cache: CacheConfig | None = None
    filter: FilterConfig | None = None
    prefetch: PrefetchConfig | None = None

    @property
    def enabled(self) -> bool:
        return self.cache is not None or self.filter is not None


def _section(values: Any, name: str) -> dict[str, Any] | None:
    if values is None or values is False:
        return None
    if values is True:
        return {}
    if not isinstance(values, Mapping):
        raise ServeError(f"{name} must be a mapping of its fields (or true for the defaults), "
                         f"got {values!r}")
    return dict(values)


def front_from_mapping(values: Any, where: str = "front") -> FrontConfig:
    """From a parsed YAML document; errors start with ``where`` (the file's name)."""
    if values is None:
        return FrontConfig()
    if not isinstance(values, Mapping):
        raise ServeError(f"{where}: expected a mapping with sections {' and '.join(SECTIONS)}, "
                         f"got {type(values).__name__}")
    unknown = sorted(set(map(str, values)) - set(SECTIONS))
    if unknown:
        raise ServeError(f"{where}: unknown section(s) {', '.join(unknown)}; known: "
                         f"{', '.join(SECTIONS)}")
    try:
        cache = _section(values.get("cache"), "cache")
        filt = _section(values.get("filter"), "filter")
        push = _section(values.get("prefetch"), "prefetch")
        if push is not None and cache is None:
            raise ServeError("prefetch needs a cache section: it pushes the cache's entries")
        return FrontConfig(None if cache is None else CacheConfig.from_mapping(cache),
                           None if filt is None else FilterConfig.from_mapping(filt),
                           None if push is None else PrefetchConfig.from_mapping(push))
    except (ServeError, TypeError) as e:
        raise ServeError(f"{where}: {e}") from None


def front_flag(text: str, flag: str = "--front") -> tuple[str, FrontConfig]:
    """``MODEL=FILE.yaml`` or ``MODEL={cache: {threshold: 0.9}}`` (the document inline): the
    model (as the node's registry names it) and the stages to put in front of it."""
    model, eq, value = text.partition("=")
    model, value = model.strip(), value.strip()
    if not eq or not model or not value:
        raise ServeError(f"{flag} {text!r}: expected MODEL=FILE.yaml (e.g. {flag} "
                         f"digits-cnn=front.yaml) or MODEL={{cache: {{threshold: 0.9}}}}")
    if value.startswith("{"):
        try:
            doc = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ServeError(f"{flag} {model}: not valid YAML "
                             f"({str(e).splitlines()[0]})") from None
        config = front_from_mapping(doc, f"{flag} {model}")
    else:
        try:
            config = load_front(value)
        except ServeError as e:
            raise ServeError(f"{flag} {model}: {e}") from None
    if not config.enabled:
        raise ServeError(f"{flag} {model}: turns on no stage (give a cache: or filter: "
                         f"section)")
    return model, config


def load_front(path: str | Path) -> FrontConfig:
    """The front stages a YAML file turns on."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ServeError(f"{p}: cannot read the front-stage file ({e.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ServeError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    return front_from_mapping(doc, str(p))


def parse_flag(text: str, flag: str) -> dict[str, Any]:
    """``k=3,threshold=0.7,positive=[1,2]`` as a mapping (values read as YAML); ``on`` or an
    empty string: the defaults."""
    text = text.strip()
    if text in ("", "on"):
        return {}
    out: dict[str, Any] = {}
    for part in _split_top(text):
        field, eq, value = part.partition("=")
        if not eq or not field.strip():
            raise ServeError(f"{flag} {text!r}: expected field=value pairs separated by commas "
                             f"(e.g. {flag} k=3,threshold=0.7), got {part!r}")
        try:
            out[field.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ServeError(f"{flag}: the value of {field.strip()} ({value!r}) is not a "
                             f"number, word or [list]") from None
    return out


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets (so ``positive=[1,2]`` stays one pair)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def with_flags(config: FrontConfig, cache: str | None = None,
               filter: str | None = None) -> FrontConfig:
    """``config`` with the ``--cache`` and ``--filter`` flags' fields laid over its own."""
    out = config
    if cache is not None:
        out = replace(out, cache=_overlay(CacheConfig, config.cache, cache, "--cache"))
    if filter is not None:
        out = replace(out, filter=_overlay(FilterConfig, config.filter, filter, "--filter"))
    return out


def _overlay(cls: Any, base: object, flag: str, name: str) -> Any:
    """``cls`` from ``base``'s fields with the flag's laid over them."""
    fields = parse_flag(flag, name)
    try:
        return cls.from_mapping({**(vars(base) if base is not None else {}), **fields})
    except (ServeError, TypeError) as e:
        raise ServeError(f"{name}: {e}") from None


def build_front(config: FrontConfig, model: nn.Module, input_shape: Sequence[int],
                num_classes: int, embed_module: nn.Module | None = None) -> list[FrontStage]:
    """The stages ``config`` turns on, for ``model`` (any classifier taking ``input_shape``
    and giving ``num_classes`` logits): the filter, then the cache. A ``prefix:`` cache key
    is read from ``embed_module`` (an fx-traceable copy of the model) when given, else from
    ``model``."""
    stages: list[FrontStage] = []
    if config.filter is not None:
        bad = [c for c in config.filter.positive if c >= num_classes]
        if bad:
            raise ServeError(f"filter.positive names class(es) {bad}; the model's classes are "
                             f"0..{num_classes - 1}")
        stages.append(LearningFilter(model, input_shape, config.filter, background=True))
    if config.cache is not None:
        embedder = make_embedder(config.cache.embed, embed_module or model, input_shape,
                                 seed=config.cache.seed)
        stages.append(SemanticCache(embedder, input_shape, num_classes, config.cache))
    return stages
