"""FedCS, adaptive frequency and hierarchical rounds from the experiment YAML and the command line:
every bad value or combination is one error naming the field or flag, and the examples in
examples/fl/ run (a few rounds each)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from edgeweave.cli import fl_cmds, train_cmds
from edgeweave.cli.app import app
from edgeweave.errors import EdgeWeaveError
from edgeweave.train.config import load_config, parse_config
from edgeweave.train.control import AdaptiveFrequency, FedCS
from edgeweave.train.control.from_config import hierarchy_groups
from edgeweave.train.experiment import run
from edgeweave.train.types import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = Path(__file__).parents[2] / "examples" / "fl"
FLEET = {"fleet": "multi-device"}


@pytest.mark.parametrize("raw,words", [
    ({"fedcs": {"deadline_s": 1}}, "fedcs: needs each client's compute and upload times: give "
                                   "`fleet`"),
    ({"fedcs": {"deadline_s": -1}, **FLEET}, "fedcs.deadline_s: Input should be greater than 0"),
    ({"fedcs": {"deadline_s": 1, "policy": "fast"}, **FLEET}, "fedcs.policy: Input should be "
                                                              "'greedy' or 'random'"),
    ({"fedcs": {"deadline_s": 1}, **FLEET, "speeds": {"upload_s": [0, 1]}},
     "speeds: the fleet already gives every client its speed"),
    ({"fedcs": {"deadline_s": 1}, **FLEET, "adaptive_frequency": {"budget": 9}},
     "fedcs: cannot be combined with adaptive_frequency"),
    ({"fedcs": {"deadline_s": 1}, **FLEET,
      "privacy": {"dp_fedavg": {"noise_multiplier": 1.0}}},
     "fedcs: cannot be combined with privacy.dp_fedavg"),
    ({"fedcs": {"deadline_s": 1}, **FLEET, "strategy": {"name": "fedasync"}},
     "fedcs: needs a synchronous strategy, not 'fedasync'"),
    ({"adaptive_frequency": {"budget": 0}}, "adaptive_frequency.budget: Input should be greater "
                                            "than 0"),
    ({"adaptive_frequency": {"step_cost": 1}}, "adaptive_frequency.budget: missing"),
    ({"adaptive_frequency": {"budget": 9, "tau_init": 8, "tau_max": 4}},
     "adaptive_frequency: tau_init (8) must be <= tau_max (4)"),
    ({"adaptive_frequency": {"budget": 9}, "fit": {"local_steps": 2}},
     "adaptive_frequency: chooses fit.local_steps itself"),
    ({"adaptive_frequency": {"budget": 9}, "secure_aggregation": {}},
     "adaptive_frequency: cannot be combined with secure_aggregation"),
    ({"hierarchy": {"edge_rounds": 2}}, "hierarchy: needs `fleet`"),
    ({"hierarchy": {"edge_rounds": 0}, "fleet": "two-edges"},
     "hierarchy.edge_rounds: Input should be greater than or equal to 1"),
    ({"hierarchy": {}, "fleet": "two-edges", "over_select": 1.5},
     "hierarchy: cannot be combined with over_select"),
    ({"hierarchy": {}, "fleet": "two-edges", "up_codec": "int8"},
     "hierarchy: cannot be combined with up_codec"),
    ({"hierarchy": {}, "fleet": "pi4-wifi-cloud"},
     "fleet: fleet 'pi4-wifi-cloud': device 'pi' (client 0) is linked to no edge node"),
    ({"fleet": "nowhere"}, "fleet: unknown fleet 'nowhere'"),
    ({"fleet": {"source": "two-edges", "jitter": -1}}, "fleet.jitter: Input should be greater "
                                                       "than or equal to 0"),
])
def test_bad_control_sections_name_the_field(raw, words):
    with pytest.raises(TrainError) as e:
        parse_config(raw, "exp.yaml")
    assert str(e.value).startswith("exp.yaml: ") and words in str(e.value), str(e.value)


def test_the_sections_build_the_wrappers_and_the_groups():
    cfg = parse_config({"fedcs": {"deadline_s": 0.2, "max_clients": 3}, **FLEET})
    from edgeweave.train.config import build_strategy

    s = build_strategy(cfg)
    assert isinstance(s, FedCS) and (s.deadline_s, s.max_clients) == (0.2, 3)
    cfg = parse_config({"adaptive_frequency": {"budget": 50, "agg_cost": 4}})
    s = build_strategy(cfg)
    assert isinstance(s, AdaptiveFrequency) and (s.budget, s.c, s.b) == (50, 1, 4)
    # two-edges: client i on device node i mod 4; pi4-b names edge-b though edge-a is faster
    cfg = parse_config({"hierarchy": {}, "fleet": "two-edges", "data": {"clients": 6}})
    assert hierarchy_groups(cfg) == {"edge-a": [0, 1, 4, 5], "edge-b": [2, 3]}


@pytest.mark.parametrize("args,words", [
    (["--fedcs-deadline", "nan"], "--fedcs-deadline: expected a finite number > 0, got nan"),
    (["--edge-rounds", "0"], "--edge-rounds: expected an integer >= 1, got 0"),
    (["--agg-cost", "-1"], "--agg-cost: expected a finite number >= 0, got -1"),
    (["--fedcs-deadline", "1"], "(with --fedcs-deadline): fedcs: needs each client's compute"),
    (["--edge-rounds", "2"], "(with --edge-rounds): hierarchy: needs `fleet`"),
    (["--step-cost", "2"], "(with --step-cost): adaptive_frequency.budget: missing"),
    (["--fleet", "nowhere", "--edge-rounds", "2"], "fleet: unknown fleet 'nowhere'"),
])
def test_train_flags_are_checked_by_name(args, words):
    res = CliRunner().invoke(app, ["fl", "run", "--config", str(EXAMPLES / "digits-fedavg.yaml"),
                                   *args], env={"COLUMNS": "200"})
    assert isinstance(res.exception, EdgeWeaveError), res.output
    assert words in str(res.exception), str(res.exception)


def test_fl_server_and_fl_edge_flags_build_the_same_experiment(tmp_path):
    flags = {"fleet": "two-edges", "edge_rounds": 3, "fraction": 0.5}
    cfg = fl_cmds._experiment(None, flags)
    assert (cfg.data.clients, cfg.hierarchy.edge_rounds, cfg.fleet.source) == (4, 3,
                                                                               "two-edges")
    assert fl_cmds._experiment(None, flags, "fl edge") == cfg
    with pytest.raises(EdgeWeaveError, match="fl server options: fedcs: needs each client"):
        fl_cmds._experiment(None, {"fedcs_deadline": 1.0})
    tok = tmp_path / "tok"
    from edgeweave.train.wire.auth import write_token

    write_token(tok)
    console = Console(file=io.StringIO())
    exp = tmp_path / "exp.yaml"
    exp.write_text("backend: grpc\nfedcs: {deadline_s: 1}\nspeeds: {upload_s: [0, 1]}\n")
    with pytest.raises(EdgeWeaveError, match="fedcs: `edgeweave fl server` reads the devices' "
                                             "speeds from `fleet`"):
        fl_cmds.fl_server(console, config=exp, listen="127.0.0.1:0", token_file=tok,
                          test_data=None, min_clients=None, round_timeout=5, wait_clients=1)
    with pytest.raises(EdgeWeaveError, match="--edge 'edge-c': not an edge with devices in "
                                             "fleet 'two-edges' \\(edges: edge-a, edge-b\\)"):
        fl_cmds.fl_edge(console, config=None, edge="edge-c", cloud="127.0.0.1:1",
                        listen="127.0.0.1:0", token_file=tok, cloud_token_file=None,
                        min_clients=None, round_timeout=5, wait_clients=1, **flags)
    with pytest.raises(EdgeWeaveError, match="`edgeweave fl edge` runs an edge of a hierarchy"):
        fl_cmds.fl_edge(console, config=EXAMPLES / "digits-grpc.yaml", edge="edge-a",
                        cloud="127.0.0.1:1", listen="127.0.0.1:0", token_file=tok,
                        cloud_token_file=None, min_clients=None, round_timeout=5,
                        wait_clients=1)


@pytest.mark.parametrize("name", ["digits-fedcs", "digits-adaptive", "digits-hierarchical"])
def test_the_examples_run(name, tmp_path):
    cfg = load_config(EXAMPLES / f"{name}.yaml")
    cfg = cfg.model_copy(update={"rounds": 3, "out_dir": tmp_path, "plot": False})
    records = run(cfg)
    assert [r.round for r in records] == [1, 2, 3]
    assert records[-1].test_loss < records[0].test_loss or records[-1].test_acc > 0.5
    if name == "digits-fedcs":  # only the clients that fit the deadline: the Wi-Fi ones first
        assert all(0 < r.clients < cfg.data.clients for r in records)
    if name == "digits-adaptive":  # tau chosen every round, paid from the budget
        assert all(r.clients > 0 for r in records)
    if name == "digits-hierarchical":  # the cloud's clients are the two edges
        assert [r.clients for r in records] == [2, 2, 2]
        # a device update and an edge model are one model each: WAN up is two of them
        assert all(r.extra["device_edge_up"] == r.extra["device_updates"] * r.bytes_up // 2
                   for r in records)


def test_the_grpc_hierarchy_example_as_fl_server_and_fl_edge_read_it():
    raw = yaml.safe_load((EXAMPLES / "digits-hier-grpc.yaml").read_text())
    assert raw["backend"] == "grpc"
    cfg = fl_cmds._experiment(EXAMPLES / "digits-hier-grpc.yaml", {}, "fl edge")
    assert hierarchy_groups(cfg) == {"edge-a": [0, 1], "edge-b": [2, 3]}
    # a control flag overrides its field and keeps the section's others
    sections, flags = train_cmds.control_sections(
        {"fleet": "two-edges"}, {"fleet": {"source": "multi-device", "assign": "random"}})
    assert sections == {"fleet": {"source": "two-edges", "assign": "random"}}
    assert flags == ["--fleet"]
