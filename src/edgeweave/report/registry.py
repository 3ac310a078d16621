"""The kinds of result the report knows: every module of `edgeweave.report.sections` that
defines `KIND`, so adding a kind (serving load test, multi-device run, simulation) is adding
one file there. Kinds are asked in their `order`; the first that claims an input gets it.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from edgeweave.report.section import SectionKind


@cache
def kinds() -> tuple[SectionKind, ...]:
    from edgeweave.report import sections

    found = []
    for info in pkgutil.iter_modules(sections.__path__):
        module = importlib.import_module(f"{sections.__name__}.{info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, SectionKind):
            found.append(kind)
    return tuple(sorted(found, key=lambda k: (k.order, k.name)))
