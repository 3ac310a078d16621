"""The `adapt select --cache` store: candidates round-trip exactly, the key follows the model
and --epochs, and a damaged record is named and never used (the command then rebuilds it)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from torch import nn

from edgeweave.cli import select_cache
from edgeweave.cli.select_cache import CacheKey
from edgeweave.plan import BigLittleCandidate, Candidate
from helpers import make_profile

KEY = CacheKey(model="ab" * 32, epochs=2)


def _toy(device_ms: float):
    return make_profile([(0.0, 0.0, 0.0), (device_ms, 0.1, 0.05)], [16_000, 40], [(0, 1)],
                        [(20.0, 8.0), (100.0, 30.0)])


def _candidates():
    small, large = _toy(2.0), _toy(30.0)
    return [Candidate("small", 0.9, small, {"weights": 2500, "recipe": "distill"}),
            Candidate("large", 0.97, large, {"weights": 10**6}),
            BigLittleCandidate("big/little", 0.965, small, large, 0.2, 0.7, "confidence",
                               {"little": "small", "big": "large"})]


def _load(cache, key=KEY):
    out = io.StringIO()
    return select_cache.load(cache, key, Console(file=out, width=300)), out.getvalue()


@pytest.fixture
def stored(tmp_path):
    select_cache.store(tmp_path, KEY, _candidates())
    return tmp_path


def test_candidates_round_trip_and_a_pair_shares_its_members_profiles(stored):
    got, said = _load(stored)
    assert said == "" and got == _candidates()
    assert got[2].little is got[0].profile and got[2].big is got[1].profile


@pytest.mark.parametrize("other", [CacheKey("cd" * 32, 2), CacheKey("ab" * 32, 3)])
def test_another_model_or_epochs_is_another_entry(stored, other):
    assert _load(stored, other) == (None, "")


def test_the_model_digest_follows_structure_and_initial_weights():
    def net(width, seed):
        import torch

        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, width))

    digest = select_cache.model_digest
    assert digest(net(8, 0)) == digest(net(8, 0))
    assert digest(net(8, 0)) != digest(net(8, 1)) != digest(net(9, 1))


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda d: "{", "not valid JSON"),
    (lambda d: {**d, "format": 0}, "format 0"),
    (lambda d: {**d, "key": {**d["key"], "epochs": 9}}, "made for"),
    (lambda d: {**d, "profiles": {}}, "profiles"),
    (lambda d: {**d, "profiles": {**d["profiles"], "small": {"nodes": 3}}}, "profiles.small"),
    (lambda d: {**d, "candidates": [{**d["candidates"][0], "accuracy": float("nan")}]},
     "candidates[0].accuracy"),
    (lambda d: {**d, "candidates": [{**d["candidates"][0], "kind": "other"}]},
     "candidates[0].kind"),
    (lambda d: {**d, "candidates": [{**d["candidates"][2], "big": "nobody"}]},
     "little and big must name stored profiles"),
    (lambda d: {**d, "candidates": [{**d["candidates"][2], "escalation_rate": 2}]},
     "escalation_rate"),
])
def test_a_damaged_record_is_named_and_never_used(stored, edit, reason):
    record = stored / f"{KEY.stem}.json"
    doc = edit(json.loads(record.read_text()))
    record.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    got, said = _load(stored)
    assert got is None
    assert str(record) in said and reason in said and "rebuilding it" in said, said
