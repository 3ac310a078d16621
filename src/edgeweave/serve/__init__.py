"""Edge serving: many devices and many models on one node, meeting their deadlines, and doing
less work where it can.

Requests (deadline, priority, model) are admitted or refused at once, wait in their model's
bounded queue, and run in batches the scheduler picks across models by earliest deadline
(`serve.scheduler`); a request that can no longer meet its deadline is shed with a reason
instead of being served late (DESIGN.md, "The serving path"). Stages in front of a served model
(a semantic cache, an input-filtering cascade: `serve.stage`, `serve.engine_stages`) answer or
skip a request before it queues. This package knows nothing of the wire: the node server
(`runtime.server`) checks and decodes requests and turns a shed request into a gRPC status, and
the device answers it itself. `serve.loadgen` plays many devices against nodes. Sits above
train/plan/adapt/profile/graph/codec/topology and below runtime; it never imports runtime.
"""

from edgeweave.serve.aimd import AIMDBatchSize
from edgeweave.serve.config import NodeServing, ServingConfig, resolve
from edgeweave.serve.engine import Engine
from edgeweave.serve.latency import LatencyModel
from edgeweave.serve.pending import Answer, Pending, Shed
from edgeweave.serve.stage import Front, FrontStage, Verdict

__all__ = ["AIMDBatchSize", "Answer", "Engine", "Front", "FrontStage", "LatencyModel",
           "NodeServing", "Pending", "ServingConfig", "Shed", "Verdict", "resolve"]
