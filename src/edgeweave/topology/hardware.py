"""What a node's hardware can do: sustained DNN throughput, memory and power draw.

Planners turn a model's FLOPs into milliseconds and joules with these numbers, so they must be
*effective* figures measured on real DNN inference, not datasheet peaks: a Raspberry Pi 4's NEON
units peak near 48 GFLOP/s but PyTorch sustains roughly a fifth of that on dense convolutions.
Every profile carries a ``source`` so a reader can see where each number came from and how much
to trust it; where a number is an estimate rather than a measurement, the source says so.

Power semantics: each ``power_*_w`` is the whole node's draw while it is in that state
(computing, idle, transmitting, receiving), so the energy of a phase is simply power × time.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edgeweave.errors import FleetError


class HardwareProfile(BaseModel):
    """Performance and power figures of one kind of hardware, used to predict latency and energy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str
    gflops: float = Field(
        gt=0,
        description="Effective fp32 GFLOP/s sustained on DNN inference (dense conv), not peak.",
    )
    memory_mb: float = Field(gt=0, description="Memory available to a model, in MiB.")
    power_compute_w: float = Field(ge=0, description="Whole-node draw while running inference.")
    power_idle_w: float = Field(ge=0, description="Whole-node draw while waiting.")
    power_tx_w: float = Field(ge=0, description="Whole-node draw while transmitting.")
    power_rx_w: float = Field(ge=0, description="Whole-node draw while receiving.")
    op_overhead_ms: float = Field(
        default=0.0,
        ge=0,
        description="Fixed per-operator dispatch cost (e.g. GPU kernel launch), in ms.",
    )
    cores: int = Field(
        default=1,
        ge=1,
        description="Inferences the node runs at once, each at `gflops` (its parallel worker "
        "slots); more requests than this share that capacity (processor sharing). A board whose "
        "`gflops` already uses all its CPU cores for one inference has 1.",
    )
    source: str = Field(min_length=1, description="Where the numbers come from.")


# Radio figures for the phone come from the LTE power model of Huang et al., "A Close
# Examination of Performance and Power Characteristics of 4G LTE Networks", MobiSys 2012:
# uplink P = 438.39 mW/Mbps * rate + 1288.04 mW, downlink P = 51.97 mW/Mbps * rate + 1288.04 mW,
# evaluated at Neurosurgeon's (Kang et al., ASPLOS 2017) measured LTE uplink of 5.85 Mbit/s:
# 438.39 * 5.85 + 1288 ≈ 3.85 W transmit, 51.97 * 5.85 + 1288 ≈ 1.59 W receive.
#
# The Raspberry Pi figures use the board-level current measurements published by RasPi.TV and
# Tom's Hardware (5 V rail): Pi 3 B ≈ 260 mA idle / 730 mA under stress, Pi 4 B ≈ 540 mA idle /
# 1280 mA under stress. The on-board WiFi adds roughly 0.5-0.7 W while streaming (estimate from
# hobbyist USB-meter measurements); we add that to idle for tx and a little less for rx.
#
# Effective GFLOP/s for the Pis are derived from PyTorch-on-Pi inference times (e.g. the PyTorch
# tutorial "Real Time Inference on Raspberry Pi 4", and community ResNet-18/MobileNetV2 fp32
# benchmarks): ResNet-18 (≈3.6 GFLOP) takes ≈0.4 s on a Pi 4 and ≈1.2 s on a Pi 3.
CATALOG: dict[str, HardwareProfile] = {
    profile.name: profile
    for profile in (
        HardwareProfile(
            name="rpi3",
            description="Raspberry Pi 3 Model B: 4x Cortex-A53 @ 1.2 GHz, 1 GB RAM, WiFi 802.11n",
            gflops=3.0,
            memory_mb=1024,
            # RasPi.TV: 260 mA idle, 730 mA stress at 5 V.
            power_compute_w=3.7,
            power_idle_w=1.4,
            power_tx_w=2.0,
            power_rx_w=1.8,
            source=(
                "Power: RasPi.TV Raspberry Pi 3 B current measurements (260 mA idle, 730 mA "
                "stress @5 V); WiFi increment ~0.4-0.6 W is an estimate. GFLOP/s: effective, "
                "from PyTorch fp32 ResNet-18 inference ~1.2 s on Pi 3 (community benchmarks)."
            ),
        ),
        HardwareProfile(
            name="rpi4",
            description="Raspberry Pi 4 Model B: 4x Cortex-A72 @ 1.5 GHz, 4 GB RAM, WiFi 802.11ac",
            gflops=9.0,
            memory_mb=4096,
            # Tom's Hardware / RasPi.TV: 540 mA idle (2.7 W), 1280 mA stress (6.4 W) at 5 V.
            power_compute_w=6.4,
            power_idle_w=2.7,
            power_tx_w=3.4,
            power_rx_w=3.2,
            source=(
                "Power: Tom's Hardware and RasPi.TV Raspberry Pi 4 B measurements (2.7 W idle, "
                "6.4 W under stress); WiFi increment ~0.5-0.7 W is an estimate. GFLOP/s: "
                "effective, from PyTorch fp32 ResNet-18 ~0.4 s on Pi 4 (PyTorch 'Real Time "
                "Inference on Raspberry Pi 4' tutorial and community benchmarks)."
            ),
        ),
        HardwareProfile(
            name="jetson-nano",
            description="NVIDIA Jetson Nano 4 GB: 128-core Maxwell GPU, 4x Cortex-A57, 10 W mode",
            # Datasheet peak is 472 GFLOP/s fp16 (≈236 fp32); cuDNN conv sustains about a third.
            gflops=80.0,
            memory_mb=4096,
            # Datasheet power modes 5 W / 10 W (MAXN); board idles at ~1.25 W.
            power_compute_w=10.0,
            power_idle_w=1.25,
            power_tx_w=2.5,
            power_rx_w=2.2,
            # CUDA kernel launch on the Nano's slow A57 host is ~20 µs per operator.
            op_overhead_ms=0.02,
            source=(
                "NVIDIA Jetson Nano module datasheet (472 GFLOP/s fp16 peak, 5 W/10 W power "
                "modes); idle ~1.25 W from NVIDIA forum measurements; effective fp32 GFLOP/s and "
                "the M.2/USB WiFi increment (~1 W) are estimates."
            ),
        ),
        HardwareProfile(
            name="phone",
            description="Mid/high-end Android phone, Snapdragon 855 class (Kryo 485 CPU), LTE",
            gflops=25.0,
            memory_mb=6144,
            # Sustained SoC power under full CPU load ≈ 5 W before thermal throttling.
            power_compute_w=5.0,
            power_idle_w=0.5,
            # Huang et al. MobiSys 2012 LTE model at 5.85 Mbit/s (see comment above CATALOG).
            power_tx_w=3.85,
            power_rx_w=1.59,
            source=(
                "Radio: Huang et al., MobiSys 2012 LTE power model at Neurosurgeon's (Kang et al., "
                "ASPLOS 2017) 5.85 Mbit/s uplink; compute ~5 W sustained SoC power and effective "
                "~25 GFLOP/s fp32 (multi-threaded CPU inference) are estimates from public "
                "Snapdragon 855 reviews and AI-Benchmark results."
            ),
        ),
        HardwareProfile(
            name="edge-server",
            description="Edge server: 2x Intel Xeon E5-2680 v4 (28 cores), 64 GB RAM, wired NIC",
            gflops=300.0,
            memory_mb=65536,
            # Intel ARK: 120 W TDP per socket; whole-server idle ~100 W is a typical figure.
            power_compute_w=280.0,
            power_idle_w=100.0,
            power_tx_w=105.0,
            power_rx_w=105.0,
            # ~1 TFLOP/s AVX2 peak / ~300 GFLOP/s per batch-1 inference: about three requests at
            # full speed; 4 worker slots (the runtime server's default max_concurrency)
            cores=4,
            source=(
                "Intel ARK Xeon E5-2680 v4 (2x120 W TDP, 2x14 cores @ 2.4 GHz, AVX2 peak ~1 "
                "TFLOP/s); effective ~300 GFLOP/s fp32 with oneDNN and server idle ~100 W are "
                "estimates."
            ),
        ),
        HardwareProfile(
            name="cloud-gpu",
            description="Cloud GPU: NVIDIA T4 (16 GB) in a datacenter host",
            gflops=2000.0,
            memory_mb=16384,
            # T4 datasheet: 70 W board power, 8.1 TFLOP/s fp32 peak; ~10 W in P8 idle.
            power_compute_w=70.0,
            power_idle_w=10.0,
            power_tx_w=12.0,
            power_rx_w=12.0,
            # CUDA kernel launch ≈ 5-10 µs per operator on a server host.
            op_overhead_ms=0.01,
            # 8.1 TFLOP/s peak / ~2 TFLOP/s per batch-1 inference: ~4 concurrent streams
            cores=4,
            source=(
                "NVIDIA T4 datasheet (70 W, 8.1 TFLOP/s fp32 peak, 16 GB); effective ~2 TFLOP/s "
                "on batch-1 conv inference and ~10 µs kernel launch overhead are estimates; power "
                "covers the GPU board only."
            ),
        ),
    )
}


def get_hardware(name: str) -> HardwareProfile:
    """Look up a built-in profile by name, so fleet files can say ``hardware: rpi4``."""
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(CATALOG)
        raise FleetError(f"unknown hardware {name!r} (known: {known})") from None
