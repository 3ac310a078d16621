"""Makes run_adapt_resnet18.json: a real co-inference run (local edge and cloud processes) whose
first-hop bandwidth drops mid-run (80 -> 4 Mbit/s) with adaptation on, so the runtime re-plans.
Written as `edgeweave infer --json` writes a run.

    cd tests/report/data && PYTHONPATH=../../../src python make_adapt_run.py run_adapt_resnet18.json
"""

import json
import sys

import torch

from edgeweave.graph import capture_spec
from edgeweave.profile import profile_graph
from edgeweave.runtime.client import ClientOptions
from edgeweave.runtime.lab import LocalLab
from edgeweave.runtime.session import device_dilation, plan_for, run
from edgeweave.topology import BandwidthTrace, load_fleet

fleet = load_fleet("pi4-wifi-edge-cloud")
graph = capture_spec("resnet18")
measured = profile_graph(graph, fleet, warmup=1, repeats=2)
prof, chosen = plan_for(measured, fleet, mbps=80.0)
x = torch.randn(graph.input_shape)
drop = BandwidthTrace(t_s=[0.0, 1.0, 600.0], mbps=[80.0, 4.0, 4.0])
with LocalLab() as lab:
    summary = run(graph, chosen, lab.edge_target, [x] * 10,
                  dilation=device_dilation(measured, fleet), token=lab.token,
                  options=ClientOptions(adapt=True), profile=prof, trace=drop)
with open(sys.argv[1], "w") as f:
    f.write(json.dumps(summary.to_json(), indent=1))
