"""Serving at the edge: stages in front of a served model that let it do less work (a semantic
cache, an input-filtering cascade), and the workloads that measure them. Sits above
train/plan/adapt/profile/graph/codec/topology and below runtime; it never imports runtime."""

from edgeweave.serve.stage import Front, FrontStage, Verdict

__all__ = ["Front", "FrontStage", "Verdict"]
