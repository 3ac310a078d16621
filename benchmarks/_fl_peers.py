"""A federated workload on a peer framework: Apple's pfl simulator or Flower's simulation.

Run by ``fl_throughput.py --vs-peers`` and ``fl_time_to_accuracy.py`` as a subprocess with the
interpreter that has the peer installed (``.venv-peers``: Flower needs protobuf 6, EdgeWeave's
gRPC runtime protobuf 7, so the two cannot share one environment). Imports nothing from
EdgeWeave: the split, the model spec, the initial weights, the settings and (for time to
accuracy) each round's cohort and the target accuracy come in one ``.npz`` written by the
parent, so every framework trains the same clients from the same model. The architectures below
repeat EdgeWeave's ``mlp:`` and ``cnn:`` specs; loading the parent's initial weights with
``strict=True`` checks that they match. Prints one JSON line: the per-round wall times (test
evaluation excluded; round 1 includes the framework's set-up: pfl's model and backend, Flower's
simulation start with its Ray actors), the test accuracy after every round when a target is
given, and the final test accuracy, measured the same way as for EdgeWeave's backends.

Without ``cohorts`` every client trains every round for ``--rounds`` rounds (fl_throughput).
With ``cohorts`` (rounds x k client ids) round r trains exactly ``cohorts[r]``, and the run stops
after the first round whose test accuracy reaches ``target``: pfl through a user sampler that
walks the cohorts, Flower through a FedAvg whose ``configure_train`` sends each of k nodes the
id of the client it simulates (ClientApps are stateless, so any node can play any client).

Setting up the peer venv (it reuses the main venv's torch through a .pth line: about 400 MB
rather than another torch install):

    python3.11 -m venv .venv-peers
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > .venv-peers/lib/python3.11/site-packages/zz_edgeweave_main.pth
    .venv-peers/bin/pip install 'pfl[pytorch]' 'flwr[simulation]'   # the bench-peers extra

Both peers run the way their documentation shows: pfl's ``FederatedAveraging`` over a
``SimulatedBackend`` with sample-weighted aggregation; Flower's Message-API ``FedAvg`` with a
``ClientApp`` whose train function runs a plain PyTorch epoch (shuffled ``DataLoader``). pfl
walks a user's data in order, without shuffling; at 100 or more digit clients every client's
data is one batch of at most 16, so the batch order cannot change the result, and the final
accuracies of all frameworks are expected to agree to float rounding.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DATA: dict[str, dict[str, np.ndarray]] = {}


def load(path: str) -> dict[str, np.ndarray]:
    if path not in _DATA:
        with np.load(path) as f:
            _DATA[path] = {k: f[k] for k in f.files}
    return _DATA[path]


def layers(spec: str) -> list[nn.Module]:
    """EdgeWeave's ``mlp:IN,...,OUT`` and ``cnn:C1,C2,HIDDEN`` (8x8 inputs) architectures."""
    kind, _, args = spec.partition(":")
    dims = [int(a) for a in args.split(",")]
    if kind == "mlp":
        out: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            out += ([nn.ReLU()] if i else []) + [nn.Linear(a, b)]
        return out
    c1, c2, hidden = dims[:3]
    return [nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.ReLU(),
            nn.Linear(hidden, dims[3] if len(dims) > 3 else 10)]


class Net(nn.Sequential):
    """The workload's model with the ``loss``/``metrics`` methods pfl's PyTorchModel requires."""

    def __init__(self, spec: str = "mlp:64,64,10") -> None:
        super().__init__(*layers(spec))

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return F.cross_entropy(self(x), y)

    def metrics(self, x, y, eval=False):
        from pfl.metrics import Weighted

        self.eval() if eval else self.train()
        with torch.no_grad():
            out = self(x)
        return {"loss": Weighted(F.cross_entropy(out, y, reduction="sum").item(), len(y))}


def model_spec(d: dict[str, np.ndarray]) -> str:
    return str(d["model"]) if "model" in d else "mlp:64,64,10"


def initial_net(d: dict[str, np.ndarray]) -> Net:
    net = Net(model_spec(d))
    net.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in d.items()
                         if k.startswith("init.")})
    return net


def accuracy(net: nn.Module, d: dict[str, np.ndarray]) -> float:
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(d["test_x"])).argmax(1)
    return float((pred == torch.from_numpy(d["test_y"])).float().mean())


def client_slice(d: dict[str, np.ndarray], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = int(d["offsets"][i]), int(d["offsets"][i + 1])
    return torch.from_numpy(d["x"][lo:hi]), torch.from_numpy(d["y"][lo:hi])


class Progress:
    """Round stamps with the test evaluation taken out of the round times, and the stop rule."""

    def __init__(self, d: dict[str, np.ndarray], rounds: int) -> None:
        self.d, self.rounds = d, rounds
        self.target = float(d["target"]) if "target" in d else None
        self.round_s: list[float] = []
        self.acc: list[float] = []
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def end_round(self, net_fn) -> bool:
        """Record the round that just ended; True when the run should stop."""
        self.round_s.append(time.perf_counter() - self.t0)
        if self.target is not None:
            self.acc.append(accuracy(net_fn(), self.d))
        done = self.reached or len(self.round_s) >= self.rounds
        self.t0 = time.perf_counter()
        return done

    @property
    def reached(self) -> bool:
        return self.target is not None and bool(self.acc) and self.acc[-1] >= self.target

    def result(self, final_acc: float) -> dict:
        return {"round_s": self.round_s, "acc_by_round": self.acc, "final_acc": final_acc}


def cohorts(d: dict[str, np.ndarray], rounds: int) -> np.ndarray:
    """Round r's client ids: the parent's schedule, or every client every round."""
    if "cohorts" in d:
        return d["cohorts"][:rounds]
    n = len(d["offsets"]) - 1
    return np.tile(np.arange(n), (rounds, 1))


def run_pfl(path: str, rounds: int) -> dict:
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    d = load(path)
    plan = cohorts(d, rounds)
    progress = Progress(d, len(plan))
    progress.start()  # set-up counts, as it does for every system
    net = initial_net(d)

    class Stopwatch(TrainingProcessCallback):
        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            return progress.end_round(lambda: net), Metrics()

    walk = iter(plan.reshape(-1).tolist())  # pfl draws a cohort by calling this k times
    users = FederatedDataset(lambda uid: Dataset(raw_data=list(client_slice(d, uid)),
                                                 user_id=uid), lambda: next(walk))
    model = PyTorchModel(net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    backend = SimulatedBackend(training_data=users, val_data=None,
                               postprocessors=[WeightByDatapoints()])
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=len(plan),
                                           evaluation_frequency=len(plan) + 1,
                                           train_cohort_size=plan.shape[1], val_cohort_size=0),
        backend=backend, model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=float(d["lr"]),
                                              local_num_epochs=int(d["epochs"]),
                                              local_batch_size=int(d["batch_size"])),
        model_eval_params=NNEvalHyperParams(local_batch_size=1024),
        callbacks=[Stopwatch()])
    return progress.result(accuracy(net, d))


def run_flower(path: str, rounds: int) -> dict:
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MessageType,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.serverapp.strategy.strategy_utils import sample_nodes

    d = load(path)
    n = len(d["offsets"]) - 1
    plan = cohorts(d, rounds)
    progress = Progress(d, len(plan))
    state: dict = {"done": False}
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        data = load(path)
        net = Net(model_spec(data))
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        x, y = client_slice(data, int(msg.content["config"]["cid"]))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                             batch_size=int(data["batch_size"]), shuffle=True)
        opt = torch.optim.SGD(net.parameters(), lr=float(data["lr"]))
        net.train()
        for _ in range(int(data["epochs"])):
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(net(xb), yb).backward()
                opt.step()
        content = RecordDict({"arrays": ArrayRecord(net.state_dict()),
                              "metrics": MetricRecord({"num-examples": len(y)})})
        return Message(content=content, reply_to=msg)

    class ScheduledFedAvg(FedAvg):
        """FedAvg whose round r trains the parent's cohort r, and nothing once the run stopped
        (``start`` still walks its remaining rounds, each empty)."""

        def configure_train(self, server_round, arrays, config, grid):
            if state["done"]:
                return []
            cohort = plan[server_round - 1]
            nodes, _ = sample_nodes(grid, self.min_available_nodes, len(cohort))
            return [Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord(
                {"server-round": server_round, "cid": int(cid)})}),
                message_type=MessageType.TRAIN, dst_node_id=node)
                for node, cid in zip(nodes, cohort, strict=True)]

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        def evaluate(server_round: int, arrays: ArrayRecord):
            if server_round > 0 and not state["done"]:
                net = Net(model_spec(d))
                net.load_state_dict(arrays.to_torch_state_dict())
                state["done"] = progress.end_round(lambda: net)
                if state["done"]:
                    state["acc"] = accuracy(net, d)
            return None

        strategy = ScheduledFedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                   min_train_nodes=1, min_available_nodes=n)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_net(d).state_dict()),
                       num_rounds=len(plan), evaluate_fn=evaluate)

    progress.start()  # the simulation's start-up (Ray, its actors) is part of round 1
    run_simulation(server_app, client_app, n, os.cpu_count() or 1)
    if "acc" not in state:
        raise RuntimeError(f"flower simulation finished {len(progress.round_s)} of "
                           f"{len(plan)} rounds")
    return progress.result(state["acc"])


def run_simulation(server_app, client_app, n: int, cpus: int) -> None:
    from flwr.simulation import run_simulation as flower_simulation

    flower_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                      backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                      "init_args": {"num_cpus": cpus}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("peer", choices=["pfl", "flower"])
    ap.add_argument("npz")
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = (run_pfl if args.peer == "pfl" else run_flower)(args.npz, args.rounds)
    import importlib.metadata as md

    result["version"] = md.version("pfl" if args.peer == "pfl" else "flwr")
    print("PEER_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
