"""A training job's host memory request covers what the benchmark measured, follows batch and device."""

import pytest

from tilepipe.config import defaults
from tilepipe.resources import UNMEASURED_FACTOR, step_figures, training_memory_mb

MIB = 2**20 / 1e6  # MB per MiB

# (encoder, input px, batch) -> peak RSS MiB of one CPU step (benchmarks/bench_train_memory.py, docs/benchmarks.md).
MEASURED = {
    ("se_resnext101_32x4d", 320, 2): 4565,
    ("se_resnext101_32x4d", 320, 4): 7464,
    ("se_resnext101_32x4d", 320, 6): 10197,
    ("se_resnext101_32x4d", 160, 2): 3364,
    ("se_resnext101_32x4d", 160, 4): 3662,
    ("se_resnext50_32x4d", 320, 2): 4166,
    ("se_resnext50_32x4d", 320, 4): 6704,
    ("se_resnext50_32x4d", 160, 4): 3469,
    ("resnet34", 320, 4): 4460,
    ("resnet34", 160, 4): 1951,
    ("resnet18", 320, 4): 4323,
    ("resnet18", 160, 4): 1889,
    ("timm/convnext_tiny", 320, 2): 2800,
    ("timm/convnext_tiny", 320, 4): 4639,
    ("timm/convnext_tiny", 160, 2): 1619,
    ("timm/convnext_tiny", 160, 4): 1989,
}
# (architecture, encoder, input px, batch) -> the same, for smp architectures (default decoder, smp's classifier).
MEASURED_SMP = {
    ("UnetPlusPlus", "timm/regnety_016", 320, 2): 1698,
    ("UnetPlusPlus", "timm/regnety_016", 320, 4): 2556,
    ("UnetPlusPlus", "timm/regnety_016", 160, 2): 1035,
    ("UnetPlusPlus", "timm/regnety_016", 160, 4): 1255,
    ("UnetPlusPlus", "se_resnext50_32x4d", 320, 2): 2592,
    ("UnetPlusPlus", "se_resnext50_32x4d", 320, 4): 4395,
    ("UnetPlusPlus", "se_resnext50_32x4d", 160, 2): 1696,
    ("UnetPlusPlus", "se_resnext50_32x4d", 160, 4): 1901,
    ("Unet", "timm/efficientnet_b0", 320, 2): 1410,
    ("Unet", "timm/efficientnet_b0", 320, 4): 1960,
    ("Unet", "timm/efficientnet_b0", 160, 2): 916,
    ("Unet", "timm/efficientnet_b0", 160, 4): 1060,
    ("DeepLabV3Plus", "timm/convnext_tiny", 320, 2): 1544,
    ("DeepLabV3Plus", "timm/convnext_tiny", 320, 4): 2223,
    ("DeepLabV3Plus", "timm/convnext_tiny", 160, 2): 1277,
    ("DeepLabV3Plus", "timm/convnext_tiny", 160, 4): 1273,
}


def request(
    encoder="se_resnext101_32x4d", size=320, batch=16, device="cpu", workers=0, architecture="unet_1st_place"
) -> int:
    train = {**defaults("train"), "input_size": size, "batch_size": batch, "device": device, "num_workers": workers}
    return training_memory_mb({**defaults("model"), "architecture": architecture, "encoder": encoder}, train)


@pytest.mark.parametrize(("encoder", "size", "batch"), sorted(MEASURED))
def test_the_request_covers_every_measured_peak(encoder, size, batch):
    assert request(encoder, size, batch) >= MEASURED[encoder, size, batch] * MIB


@pytest.mark.parametrize(("architecture", "encoder", "size", "batch"), sorted(MEASURED_SMP))
def test_the_request_covers_every_measured_smp_peak(architecture, encoder, size, batch):
    peak = MEASURED_SMP[architecture, encoder, size, batch] * MIB
    assert request(encoder, size, batch, architecture=architecture) >= peak


def test_unmeasured_networks_ask_for_twice_the_largest_figures():
    twice_largest = (UNMEASURED_FACTOR * 3065, UNMEASURED_FACTOR * 1408)  # se_resnext101_32x4d's, the largest measured
    assert UNMEASURED_FACTOR == 2
    for architecture, encoder in [
        ("unet_1st_place", "timm/regnety_320"),
        ("UnetPlusPlus", "timm/regnety_160"),
        ("Unet", "resnet18"),  # measured with the 1st-place decoder only
    ]:
        assert step_figures({"architecture": architecture, "encoder": encoder}) == twice_largest
    assert request("timm/regnety_320", batch=8) > 1.9 * request("se_resnext101_32x4d", batch=8)
    # an unmeasured network's request covers twice every measured peak, at that peak's batch and size
    peaks = [(k[1], k[2], p) for k, p in MEASURED.items()] + [(k[2], k[3], p) for k, p in MEASURED_SMP.items()]
    for size, batch, peak in peaks:
        assert request("timm/unmeasured", size, batch) >= 2 * peak * MIB


def test_the_recipe_batch_that_was_oom_killed_asks_for_more_than_that_machine():
    assert request(batch=16) > 24_000, "OOM-killed at 23 GB on a 24 GB machine"


def test_cpu_requests_follow_batch_and_input_area():
    assert request(batch=2) < request(batch=4) < request(batch=16)
    assert request(size=160, batch=8) < request(size=320, batch=8)


def test_cuda_requests_do_not_follow_the_batch():
    assert request(device="cuda", batch=2) == request(device="cuda:1", batch=16) < request(device="cpu", batch=16)


def test_auto_is_sized_for_the_cpu():
    assert request(device="auto") == request(device="cpu")


def test_workers_add_memory():
    assert request(workers=8) > request(workers=0)


def test_the_demo_asks_for_little():
    assert request(encoder="resnet18", size=64, batch=8) <= 2000


def test_heap_growth_is_bounded_on_glibc():
    import platform

    from tilepipe.resources import bound_heap_growth

    assert bound_heap_growth() == (platform.libc_ver()[0] == "glibc")
