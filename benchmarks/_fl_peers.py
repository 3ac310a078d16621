"""The fl_throughput workload on a peer framework: Apple's pfl simulator or Flower's simulation.

Run by ``fl_throughput.py --vs-peers`` as a subprocess with the interpreter that has the peer
installed (``.venv-peers``: Flower needs protobuf 6, EdgeWeave's gRPC runtime protobuf 7, so the
two cannot share one environment). Imports nothing from EdgeWeave: the split, the initial
weights and the workload settings come in one ``.npz`` written by the parent, so every framework
trains the same clients from the same model. Prints one JSON line: the per-round wall times and
the final test accuracy, measured the same way as for EdgeWeave's backends.

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


class Net(nn.Sequential):
    """MLP 64-64-10 with the ``loss``/``metrics`` methods pfl's PyTorchModel requires."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return F.cross_entropy(self(x), y)

    def metrics(self, x, y, eval=False):
        from pfl.metrics import Weighted

        self.eval() if eval else self.train()
        with torch.no_grad():
            out = self(x)
        return {"loss": Weighted(F.cross_entropy(out, y, reduction="sum").item(), len(y))}


def initial_net(d: dict[str, np.ndarray]) -> Net:
    net = Net()
    net.load_state_dict({k[5:]: torch.from_numpy(v) for k, v in d.items()
                         if k.startswith("init.")})
    return net


def accuracy(net: nn.Module, d: dict[str, np.ndarray]) -> float:
    with torch.no_grad():
        pred = net(torch.from_numpy(d["test_x"])).argmax(1)
    return float((pred == torch.from_numpy(d["test_y"])).float().mean())


def client_slice(d: dict[str, np.ndarray], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = int(d["offsets"][i]), int(d["offsets"][i + 1])
    return torch.from_numpy(d["x"][lo:hi]), torch.from_numpy(d["y"][lo:hi])


def run_pfl(path: str, rounds: int) -> dict:
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    d = load(path)
    n = len(d["offsets"]) - 1
    stamps: list[float] = []

    class Stopwatch(TrainingProcessCallback):
        def on_train_begin(self, *, model):
            stamps.append(time.perf_counter())
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            stamps.append(time.perf_counter())
            return False, Metrics()

    users = FederatedDataset(lambda uid: Dataset(raw_data=list(client_slice(d, uid)),
                                                 user_id=uid),
                             get_user_sampler("minimize_reuse", list(range(n))))
    net = initial_net(d)
    model = PyTorchModel(net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    backend = SimulatedBackend(training_data=users, val_data=None,
                               postprocessors=[WeightByDatapoints()])
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=rounds,
                                           evaluation_frequency=rounds + 1,
                                           train_cohort_size=n, val_cohort_size=0),
        backend=backend, model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=float(d["lr"]),
                                              local_num_epochs=int(d["epochs"]),
                                              local_batch_size=int(d["batch_size"])),
        model_eval_params=NNEvalHyperParams(local_batch_size=1024),
        callbacks=[Stopwatch()])
    return {"round_s": np.diff(stamps).tolist(), "final_acc": accuracy(net, d)}


def run_flower(path: str, rounds: int) -> dict:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    d = load(path)
    n = len(d["offsets"]) - 1
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        data = load(path)
        net = Net()
        net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        x, y = client_slice(data, int(context.node_config["partition-id"]))
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

    stamps: list[float] = []
    final: dict[str, float] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        def evaluate(server_round: int, arrays: ArrayRecord):
            stamps.append(time.perf_counter())
            if server_round == rounds:
                net = Net()
                net.load_state_dict(arrays.to_torch_state_dict())
                final["acc"] = accuracy(net, d)
            return None

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                          min_available_nodes=n)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_net(d).state_dict()),
                       num_rounds=rounds, evaluate_fn=evaluate)

    cpus = os.cpu_count() or 1
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cpus}})
    if "acc" not in final:
        raise RuntimeError(f"flower simulation finished {len(stamps) - 1} of {rounds} rounds")
    return {"round_s": np.diff(stamps).tolist(), "final_acc": final["acc"]}


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
