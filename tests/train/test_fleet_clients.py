import pytest

from edgeweave.topology import load_fleet, transfer_ms
from edgeweave.train.control import fleet_clients, model_costs
from edgeweave.train.models import build_model
from edgeweave.train.types import TrainError


def test_times_follow_device_speed_and_uplink():
    fleet = load_fleet("multi-device")
    model = build_model("mlp:64,64,10")
    fc = fleet_clients(fleet, [100] * 6, model, (64,))
    flops, nbytes = model_costs(model, (64,))
    assert nbytes == (64 * 64 + 64 + 64 * 10 + 10) * 4
    assert flops >= 2 * (64 * 64 + 64 * 10)  # a multiply-add is two FLOPs
    assert fc.device == ["pi4", "pi3", "jetson"] * 2
    by_dev = {c.device: c for c in fc.infos}
    for name, info in by_dev.items():
        node = fleet.node(name)
        assert info.compute_s_per_epoch == pytest.approx(3 * flops * 100 / (node.hardware.gflops
                                                                             * 1e9))
        link = fleet.link(name, "edge")
        assert info.upload_s == pytest.approx(transfer_ms(nbytes, link.mbps, link.rtt_ms) / 1000)
    # the Pi 3 is slower than the Pi 4, which is slower than the Jetson; LTE uploads slower
    assert by_dev["pi3"].compute_s_per_epoch > by_dev["pi4"].compute_s_per_epoch \
        > by_dev["jetson"].compute_s_per_epoch
    assert by_dev["pi3"].upload_s > by_dev["pi4"].upload_s
    assert fc.groups() == {"edge": list(range(6))}


def test_compute_scales_with_data_and_jitter_spreads_clones():
    fleet = load_fleet("multi-device")
    model = build_model("logreg:60,10")
    one_device = load_fleet("pi4-wifi-edge-cloud")
    assert len(one_device.nodes_in("device")) == 1
    fc = fleet_clients(one_device, [10, 40], model, (60,), assign="random", seed=3)
    fc1 = fleet_clients(fleet, [10] * 30, model, (60,), jitter=0.5, seed=1)
    same = [c.compute_s_per_epoch for c in fc1.infos if c.device == "pi4"]
    assert len(set(same)) == len(same) > 1
    assert fc.infos[1].compute_s_per_epoch == pytest.approx(4 * fc.infos[0].compute_s_per_epoch)
    assert fc.infos[1].upload_s == fc.infos[0].upload_s
    with pytest.raises(TrainError, match="assign must be"):
        fleet_clients(fleet, [10], model, (60,), assign="nearest")
