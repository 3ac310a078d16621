"""The `edgent --cache` store: keyed by every option that changes it, written atomically, and
a truncated or inconsistent entry reported and never used (the command then rebuilds it)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from edgeweave.cli import edgent_cache
from edgeweave.cli.edgent_cache import CacheKey
from helpers import make_profile

KEY = CacheKey(side=16, width=8, epochs=1, seed=0)
META = {"accuracies": [0.4, 0.7, 0.5], "exit_points": [2, 5]}


def _profile():
    return make_profile([(0.0, 0.0, 0.0), (2.0, 0.1, 0.05)], [16_000, 40], [(0, 1)],
                        [(20.0, 8.0), (100.0, 30.0)])


def _load(cache, key=KEY):
    out = io.StringIO()
    entry = edgent_cache.load(cache, key, Console(file=out, width=300))
    return entry, out.getvalue()


@pytest.fixture
def stored(tmp_path):
    edgent_cache.store(tmp_path, KEY, {"w": torch.arange(6.0)}, _profile(), META)
    return tmp_path


def test_an_entry_round_trips_and_names_its_key_in_its_files(stored):
    assert sorted(p.name for p in stored.iterdir()) == [
        "edgent-v1-side16-width8-epochs1-seed0.json", "edgent-v1-side16-width8-epochs1-seed0.pt"]
    entry, said = _load(stored)
    assert said == ""
    assert entry.meta == {"side": 16, "width": 8, "epochs": 1, "seed": 0, **META}
    assert entry.profile == _profile()
    net = torch.load(stored / f"{KEY.stem}.pt", weights_only=True)
    assert torch.equal(net["w"], torch.arange(6.0))


@pytest.mark.parametrize("other", [CacheKey(16, 4, 1, 0), CacheKey(16, 8, 2, 0),
                                   CacheKey(24, 8, 1, 0), CacheKey(16, 8, 1, 1)])
def test_another_side_width_epochs_or_seed_is_another_entry(stored, other):
    assert _load(stored, other) == (None, "")


def _edit(name):
    def edit(record, net):
        doc = json.loads(record.read_text())
        if name == "truncated":
            record.write_text(record.read_text()[:200])
        elif name == "empty":
            record.write_text("")
        elif name == "binary":
            record.write_bytes(b"\xff\x00\xfe")
        elif name == "not an object":
            record.write_text("[]")
        elif name == "other key":
            record.write_text(json.dumps({**doc, "key": {**doc["key"], "width": 32}}))
        elif name == "old format":
            record.write_text(json.dumps({**doc, "format": 0}))
        elif name == "no accuracies":
            record.write_text(json.dumps({**doc, "meta": {}}))
        elif name == "nan accuracy":
            record.write_text(json.dumps({**doc, "meta": {"accuracies": [float("nan")]}}))
        elif name == "bad profile":
            record.write_text(json.dumps({**doc, "profile": {**doc["profile"], "nodes": 3}}))
        elif name == "no net":
            net.unlink()
        elif name == "other net":
            net.write_bytes(net.read_bytes()[:-1])
    return edit


@pytest.mark.parametrize(("case", "reason"), [
    ("truncated", "not valid JSON"), ("empty", "not valid JSON"), ("binary", "not valid JSON"),
    ("not an object", "not a cache record"), ("other key", "made for"),
    ("old format", "format 0"), ("no accuracies", "meta.accuracies"),
    ("nan accuracy", "meta.accuracies"), ("bad profile", "profile.nodes"),
    ("no net", ".pt is unreadable"), ("other net", "does not match the record's sha256"),
])
def test_a_damaged_entry_is_named_and_never_used(stored, case, reason):
    record, net = stored / f"{KEY.stem}.json", stored / f"{KEY.stem}.pt"
    _edit(case)(record, net)
    entry, said = _load(stored)
    assert entry is None
    assert str(record) in said and reason in said and "rebuilding it" in said, said
    edgent_cache.store(stored, KEY, {"w": torch.ones(2)}, _profile(), META)  # the rebuild
    assert _load(stored)[0] is not None
