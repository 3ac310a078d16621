"""The model specifier a node builds a multi-tenant stem from: ``digits-tenants:side=S,width=W,
heads=C1@D1+C2@D2+...``, one ``classes@depth`` per tenant in output order.

A node never runs code a peer sends; it builds models from its own registry and takes only
weights from the peer (:mod:`edgeweave.runtime.models`). This is that registry entry's
builder, as ``digits-branchy:side=S,width=W`` is Edgent's: the specifier fixes the structure
(the backbone's geometry, each tenant's head size and sharing depth), so the peer's state dict
must match it key for key and shape for shape. Every number the peer picks is bounded, because
the weights the node allocates grow with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeweave.serve.stems.backbone import STEM_BLOCKS, check_geometry, head, stem_blocks
from edgeweave.serve.stems.errors import TenancyError
from edgeweave.serve.stems.forest import StemForest, tail_of

STEM_MODEL = "digits-tenants"
#: Bounds on what a peer may ask a node to build: at 32 x 32 and width 32 each tenant that
#: shares fewer than 4 blocks holds about 4 MB of its own weights, so 16 such tenants ~ 70 MB.
MAX_SIDE = 32
MAX_WIDTH = 32
MAX_HEADS = 16
MAX_CLASSES = 1000
EXAMPLE = f"{STEM_MODEL}:side=16,width=16,heads=10@3+2@5"


def stem_spec(side: int, width: int, heads: Sequence[tuple[int, int]]) -> str:
    """The specifier of a forest with ``heads`` = ``[(classes, depth), ...]``."""
    text = "+".join(f"{c}@{d}" for c, d in heads)
    return f"{STEM_MODEL}:side={side},width={width},heads={text}"


def forest_spec(forest: StemForest, side: int, width: int) -> str:
    return stem_spec(side, width, list(zip(forest.classes, forest.depths, strict=True)))


def parse_stem_spec(spec: str) -> tuple[int, int, list[tuple[int, int]]]:
    """``(side, width, [(classes, depth), ...])`` of a specifier; a TenancyError names a
    malformed or out-of-bounds part."""
    name, _, params = spec.partition(":")
    if name != STEM_MODEL:
        raise TenancyError(f"model {spec[:120]!r} is not a {STEM_MODEL} specifier")
    values: dict[str, str] = {}
    for item in params.split(","):
        key, _, value = item.partition("=")
        if key not in ("side", "width", "heads") or key in values or not value:
            raise TenancyError(f"model {spec[:120]!r}: expected side, width and heads, each "
                               f"once, as in {EXAMPLE!r}")
        values[key] = value
    if set(values) != {"side", "width", "heads"}:
        raise TenancyError(f"model {spec[:120]!r}: expected side, width and heads, as in "
                           f"{EXAMPLE!r}")
    side = _bounded(values["side"], "side", 4, MAX_SIDE, spec)
    width = _bounded(values["width"], "width", 1, MAX_WIDTH, spec)
    try:
        check_geometry(side, width)
    except TenancyError as e:
        raise TenancyError(f"model {spec[:120]!r}: {e}") from None
    items = values["heads"].split("+")
    if len(items) > MAX_HEADS:
        raise TenancyError(f"model {spec[:120]!r}: at most {MAX_HEADS} heads, got {len(items)}")
    heads = []
    for item in items:
        classes, at, depth = item.partition("@")
        if not at:
            raise TenancyError(f"model {spec[:120]!r}: head {item[:20]!r} is not "
                               "classes@depth, as in 10@3")
        heads.append((_bounded(classes, "head classes", 2, MAX_CLASSES, spec),
                      _bounded(depth, "head depth", 0, STEM_BLOCKS, spec)))
    return side, width, heads


def forest_from_spec(spec: str) -> tuple[StemForest, tuple[int, ...]]:
    """The untrained forest and its input shape that ``spec`` names (weights come separately)."""
    side, width, heads = parse_stem_spec(spec)
    blocks = stem_blocks(side, width)
    tails = [tail_of(stem_blocks(side, width), depth, head(classes)) for classes, depth in heads]
    forest = StemForest(blocks, tails, [d for _, d in heads], [c for c, _ in heads])
    return forest.eval(), (1, 1, side, side)


def _bounded(text: str, field: str, low: int, high: int, spec: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not low <= int(text) <= high:
        raise TenancyError(f"model {spec[:120]!r}: {field} must be an integer in "
                           f"{low}..{high}, got {text[:20]!r}")
    return int(text)
