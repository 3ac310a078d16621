"""How the `edgeweave` policy replays each kind of application (`sim.apps`), one file per kind:
an adaptive Plan (chain scan, min-cut, a selected variant, a multi-device partition), an Edgent
configuration map, a big/little pair."""

from edgeweave.sim.replay.base import Replay, make_replay

__all__ = ["Replay", "make_replay"]
