"""model.architecture and timm encoders: every smp architecture and the 1st-place U-Net on timm backbones
build, run forward and backward, round-trip through checkpoints; today's checkpoints load unchanged."""

import inspect
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from safetensors.torch import save_file

from tests.model import make_main_checkpoint as main_checkpoint
from tilepipe.config import FIRST_PLACE_ARCHITECTURE, NAMED_ENCODERS, SMP_ARCHITECTURES, resolve
from tilepipe.errors import InputError
from tilepipe.model import (
    ENCODERS,
    SmpNetwork,
    Unet,
    build_model,
    checkpoint_settings,
    load_checkpoint,
    read_checkpoint,
    resolve_settings,
    save_checkpoint,
)
from tilepipe.model.timm_encoder import REDUCTIONS, _feature_indices

FIXTURE = Path(__file__).with_name("data") / "checkpoint_2d60475.pt"
SMALL_TIMM = "timm/regnetx_002"  # 2.3 M parameters, maps at strides 2..32
STRIDE4_TIMM = "timm/convnext_atto"  # first map at stride 4
NARROW = {"center_channels": 8, "decoder_channels": 8}


def images(batch: int = 2, size: int = 64, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def leaves(outputs: dict) -> list[torch.Tensor]:
    return [v for value in outputs.values() for v in (value if isinstance(value, list) else [value])]


def train_step(model: torch.nn.Module, size: int = 64, channels: int = 3) -> dict:
    """One forward and backward pass in training mode; returns the outputs. Every parameter in use gets a gradient."""
    model.train()
    outputs = model(images(size=size, channels=channels))
    sum(leaf.float().mean() for leaf in leaves(outputs)).backward()
    # smp's Unet/UnetPlusPlus build scSE for the skip of their last block, which has no skip: it stays unused
    no_grad = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and p.grad is None and ".attention1.attention." not in name
    ]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    return outputs


# ------------------------------------------------------------- today's checkpoints


def test_a_checkpoint_saved_before_architectures_loads_and_gives_identical_outputs(tmp_path):
    """The fixture is a checkpoint written by commit 2d60475's code (tests/model/make_main_checkpoint.py) without its
    45 MB state dict. The state dict is rebuilt the same way; the stored digest proves it is the one that was saved."""
    stored = torch.load(FIXTURE, weights_only=True)
    payload = stored["payload"]
    assert "architecture" not in payload["settings"]  # written before the key existed
    rebuilt = main_checkpoint.network(build_model)
    path = tmp_path / "model.pt"
    torch.save({**payload, "state_dict": rebuilt.state_dict()}, path)  # read_checkpoint checks weights_sha256
    loaded = load_checkpoint(path)
    assert isinstance(loaded, Unet)
    with torch.no_grad():
        outputs = loaded(main_checkpoint.inputs())
    expected = stored["outputs"]
    assert torch.equal(outputs["logits"], expected["logits"])
    assert torch.equal(outputs["clf"], expected["clf"])
    assert all(torch.equal(a, b) for a, b in zip(outputs["deep"], expected["deep"], strict=True))
    settings = checkpoint_settings(path)
    assert settings["architecture"] == FIRST_PLACE_ARCHITECTURE
    assert {k: settings[k] for k in payload["settings"]} == payload["settings"]
    assert read_checkpoint(path)["geometry"] == payload["geometry"]


def test_the_default_network_stores_the_settings_it_always_had():
    resolved = resolve_settings(main_checkpoint.SETTINGS)
    before = torch.load(FIXTURE, weights_only=True)["payload"]["settings"]
    new_keys = {k: resolved[k] for k in resolved if k not in before}
    assert {k: resolved[k] for k in before} == before
    assert new_keys == {"architecture": "unet_1st_place", "decoder_attention": None}


# ------------------------------------------------------------- smp architectures


def test_the_architecture_table_matches_smp():
    offered = {name.lower() for name in SMP_ARCHITECTURES}
    assert offered == set(smp.MODEL_ARCHITECTURES_MAPPING) - {"dpt"}
    for name, arch in SMP_ARCHITECTURES.items():
        cls = smp.MODEL_ARCHITECTURES_MAPPING[name.lower()]
        assert cls.__name__ == name
        takes_attention = "decoder_attention_type" in inspect.signature(cls).parameters
        assert bool(arch.attention) == takes_attention, name
    assert set(NAMED_ENCODERS) == set(ENCODERS)


@pytest.mark.parametrize("architecture", list(SMP_ARCHITECTURES))
def test_every_smp_architecture_trains_on_a_small_timm_encoder(architecture):
    size = max(64, SMP_ARCHITECTURES[architecture].min_input_size)
    torch.manual_seed(0)
    model = build_model({"architecture": architecture, "encoder": SMALL_TIMM})
    assert isinstance(model, SmpNetwork) and model.has_classifier
    outputs = train_step(model, size)
    assert outputs["logits"].shape == (2, 1, size, size)
    assert outputs["clf"].shape == (2, 1)
    assert "deep" not in outputs


@pytest.mark.parametrize("architecture", [n for n, a in SMP_ARCHITECTURES.items() if a.attention])
def test_scse_decoder_attention(architecture):
    plain = build_model({"architecture": architecture, "encoder": SMALL_TIMM, "clf_head": False})
    scse = build_model({"architecture": architecture, "encoder": SMALL_TIMM, "decoder_attention": "scse"})
    assert not plain.has_classifier
    assert any("attention" in name and "SCSE" in type(m).__name__ for name, m in scse.named_modules())
    assert not any("SCSE" in type(m).__name__ for m in plain.modules())
    train_step(scse)


def test_smp_split_api_equals_forward_and_classify_needs_the_head():
    torch.manual_seed(1)
    model = build_model({"architecture": "UnetPlusPlus", "encoder": STRIDE4_TIMM})
    train_step(model)
    model.eval()
    x = images(seed=3)
    with torch.no_grad():
        outputs = model(x)
        features = model.encode(x)
        assert torch.equal(model.segment(features), outputs["logits"])
        assert torch.equal(model.classify(features), outputs["clf"])
    headless = build_model({"architecture": "FPN", "encoder": SMALL_TIMM, "clf_head": False}).eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match="no classification head"):
        headless.classify(headless.encode(x))
    with pytest.raises(ValueError, match="multiples of 32"):
        model.encode(images(size=48))


def test_smp_state_dict_is_smps_own():
    torch.manual_seed(2)
    model = build_model({"architecture": "Unet", "encoder": SMALL_TIMM})
    original = smp.create_model(
        "Unet", encoder_name="tu-regnetx_002", encoder_weights=None, classes=1, aux_params={"classes": 1}
    )
    original.load_state_dict(model.state_dict(), strict=True)
    x = images(seed=4)
    with torch.no_grad():
        masks, labels = original.eval()(x)
        outputs = model.eval()(x)
    assert torch.equal(masks, outputs["logits"]) and torch.equal(labels, outputs["clf"])


def test_smp_on_a_named_encoder_with_its_library_weights_file(tmp_path):
    torch.manual_seed(7)
    original = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(original.state_dict(), path)
    model = build_model({"architecture": "DeepLabV3Plus", "encoder": "resnet18", "encoder_weights": str(path)})
    assert torch.equal(model.encoder.conv1.weight, original.conv1.weight)
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, original.layer4[1].bn2.running_var)
    four = build_model({"architecture": "Unet", "encoder": "resnet18", "encoder_weights": str(path), "in_channels": 4})
    assert four.encoder.conv1.weight.shape[1] == 4
    assert train_step(four, channels=4)["logits"].shape == (2, 1, 64, 64)
    with pytest.raises(InputError, match=r"resnet18\.pth: does not fit the original resnet34 "):
        build_model({"architecture": "Unet", "encoder": "resnet34", "encoder_weights": str(path)})


# ------------------------------------------------------------- the 1st-place U-Net on timm


@pytest.mark.parametrize("encoder", [SMALL_TIMM, STRIDE4_TIMM])
def test_the_first_place_unet_trains_on_timm_encoders(encoder):
    torch.manual_seed(0)
    model = build_model({"encoder": encoder, **NARROW})
    assert isinstance(model, Unet)
    outputs = train_step(model)
    assert outputs["logits"].shape == (2, 1, 64, 64)
    assert [d.shape for d in outputs["deep"]] == [(2, 1, 64, 64)] * 4
    assert outputs["clf"].shape == (2, 1)
    with torch.no_grad():
        features = model.encode(images(seed=5))
    assert [f.shape[-1] for f in features] == [64 // r for r in REDUCTIONS]
    assert [f.shape[1] for f in features] == list(model.encoder.out_channels)
    if encoder == STRIDE4_TIMM:
        assert model.encoder.out_channels[0] == 0  # no stride-2 map: the decoder does not use it


def test_the_first_place_unet_on_timm_takes_other_channel_counts():
    model = build_model({"encoder": SMALL_TIMM, "in_channels": 1, **NARROW}).eval()
    with torch.no_grad():
        assert model(images(channels=1))["logits"].shape == (2, 1, 64, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet10t", [0, 1, 2, 3, 4]),
        ("convnext_atto", [None, 0, 1, 2, 3]),
        ("dla34", [1, 2, 3, 4, 5]),  # its first map is at stride 1
        ("cspdarknet53", [1, 2, 3, 4, 5]),
        ("tresnet_m", [None, 1, 2, 3, 4]),  # its stride-2 entry names no module
    ],
)
def test_five_maps_are_chosen_by_stride(name, expected):
    indices, channels = _feature_indices(name)
    assert indices == expected
    assert (channels[0] == 0) == (expected[0] is None)


def test_backbones_without_maps_at_strides_4_to_32_are_refused():
    with pytest.raises(
        InputError, match=r"model.encoder: timm/vit_tiny_patch16_224 has no feature maps at strides 4, 8, 32"
    ):
        build_model({"encoder": "timm/vit_tiny_patch16_224"})


# ------------------------------------------------------------- checkpoints of every kind


@pytest.mark.parametrize(
    "settings",
    [
        {"encoder": SMALL_TIMM, **NARROW},
        {"architecture": "Unet", "encoder": SMALL_TIMM, "decoder_attention": "scse"},
        {"architecture": "FPN", "encoder": "resnet18", "clf_head": False},
    ],
    ids=["unet_1st_place-timm", "Unet-timm-scse", "FPN-resnet18"],
)
def test_checkpoint_round_trip_rebuilds_the_same_network(tmp_path, settings):
    torch.manual_seed(3)
    model = build_model(settings)
    train_step(model)
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, settings)
    stored = checkpoint_settings(path)
    assert stored == resolve_settings(settings)
    assert stored["architecture"] == settings.get("architecture", FIRST_PLACE_ARCHITECTURE)
    assert stored["encoder"] == settings["encoder"]
    rng = torch.get_rng_state()
    loaded = load_checkpoint(path)
    assert torch.equal(torch.get_rng_state(), rng)
    assert type(loaded) is type(model) and not loaded.training
    x = images(seed=6)
    with torch.no_grad():
        expected, actual = model(x), loaded(x)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(a, e) for a, e in zip(leaves(actual), leaves(expected), strict=True))


def test_a_checkpoint_whose_architecture_was_changed_is_refused(tmp_path):
    model = build_model({"architecture": "Unet", "encoder": SMALL_TIMM})
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, {"architecture": "Unet", "encoder": SMALL_TIMM})
    payload = torch.load(path, weights_only=True)
    payload["settings"]["architecture"] = "FPN"
    torch.save(payload, path)
    with pytest.raises(InputError, match=r"model\.pt: does not fit the FPN on timm/regnetx_002"):
        load_checkpoint(path)


# ------------------------------------------------------------- encoder weights for timm


def test_timm_weights_files_pth_and_safetensors(tmp_path):
    torch.manual_seed(11)
    whole = timm.create_model("regnetx_002")
    pth, safetensors = tmp_path / "regnetx_002.pth", tmp_path / "regnetx_002.safetensors"
    torch.save(whole.state_dict(), pth)
    save_file(whole.state_dict(), safetensors)
    stem = whole.stem.conv.weight
    for path in (pth, safetensors):
        unet = build_model({"encoder": SMALL_TIMM, "encoder_weights": str(path), **NARROW})
        assert torch.equal(unet.encoder.model.stem.conv.weight, stem)
        smp_model = build_model({"architecture": "FPN", "encoder": SMALL_TIMM, "encoder_weights": str(path)})
        assert torch.equal(smp_model.encoder.model.stem.conv.weight, stem)
    two = build_model({"encoder": SMALL_TIMM, "encoder_weights": str(pth), "in_channels": 2, **NARROW})
    assert two.encoder.model.stem.conv.weight.shape[1] == 2  # timm adapted the first conv
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in whole.state_dict().items() if not k.startswith("head.fc.")}, headless)
    unet = build_model({"encoder": SMALL_TIMM, "encoder_weights": str(headless), **NARROW})
    assert torch.equal(unet.encoder.model.s4.b1.conv1.conv.weight, whole.s4.b1.conv1.conv.weight)


def test_timm_weights_files_that_do_not_fit_name_the_file_and_keys(tmp_path):
    path = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), path)
    for settings in ({"encoder": SMALL_TIMM}, {"architecture": "Unet", "encoder": SMALL_TIMM}):
        with pytest.raises(
            InputError, match=r"resnet10t\.pth: does not fit timm's regnetx_002 model: missing keys: stem"
        ):
            build_model({**settings, "encoder_weights": str(path)})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="garbage.safetensors: cannot read as a safetensors file"):
        build_model({"encoder": SMALL_TIMM, "encoder_weights": str(garbage)})
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3}, nested)
    with pytest.raises(InputError, match="nested.pth: expected a state dict"):
        build_model({"encoder": SMALL_TIMM, "encoder_weights": str(nested)})


@pytest.mark.parametrize("architecture", [FIRST_PLACE_ARCHITECTURE, "UnetPlusPlus"])
def test_timm_imagenet_weights_offline_give_a_clear_error(architecture, monkeypatch, tmp_path):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub and the file is not in the local cache")

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(
        InputError,
        match=r"model.encoder_weights: could not download the ImageNet weights of timm/regnetx_002 from the "
        r"Hugging Face Hub repository timm/regnetx_002\.pycls_in1k .*local path \(a state dict of timm's regnetx_002\)",
    ):
        build_model({"architecture": architecture, "encoder": SMALL_TIMM, "encoder_weights": "imagenet"})


def test_unknown_timm_models_and_tags_are_refused():
    with pytest.raises(
        InputError, match="model.encoder: timm has no model 'regnetz_999' .*similar: .*timm/regnetz_005"
    ):
        build_model({"encoder": "timm/regnetz_999"})
    with pytest.raises(InputError, match="model.encoder: timm has no pretrained tag 'nope' for regnetx_002"):
        build_model({"architecture": "Unet", "encoder": "timm/regnetx_002.nope"})


# ------------------------------------------------------------- config validation, at parse time


@pytest.mark.parametrize(
    ("model", "train", "match"),
    [
        ({"architecture": "Unet", "deep_supervision": True}, {}, "model.deep_supervision: part of the unet_1st_place"),
        ({"architecture": "FPN", "cbam": True}, {}, "model.cbam: part of the unet_1st_place decoder; FPN has no cbam"),
        ({"architecture": "Linknet", "hypercolumns": True}, {}, "model.hypercolumns: "),
        (
            {"architecture": "FPN", "decoder_attention": "scse"},
            {},
            "model.decoder_attention: 'scse' is not offered by FPN",
        ),
        ({"decoder_attention": "scse"}, {}, "model.decoder_attention: .* unet_1st_place .*model.cbam"),
        ({"architecture": "unetplusplus"}, {}, "model.architecture: unknown .*did you mean 'UnetPlusPlus'"),
        ({"architecture": "DPT"}, {}, "model.architecture: unknown architecture 'DPT'"),
        ({"encoder": "timm/"}, {}, "model.encoder: unknown encoder 'timm/'"),
        ({"encoder": "efficientnet-b0"}, {}, "model.encoder: unknown encoder"),
        ({"architecture": "PAN"}, {"input_size": 96}, "train.input_size: PAN needs inputs of at least 128 px"),
    ],
)
def test_config_validation_names_the_key_before_any_job(model, train, match):
    with pytest.raises(InputError, match=match):
        resolve({"model": model, "train": train})


def test_valid_architecture_settings_pass_config_validation():
    resolve({"model": {"architecture": "Unet", "encoder": "timm/convnext_tiny.fb_in22k", "decoder_attention": "scse"}})
    resolve(
        {
            "model": {"architecture": "FPN", "deep_supervision": False, "cbam": False, "clf_head": False},
            "inference": {"clf_threshold": None},  # no head to gate on (tests/test_experiments.py)
        }
    )
    resolve({"model": {"architecture": "PAN"}, "train": {"input_size": 128}})
    resolve({"model": {"encoder": "timm/efficientnet_b0", "deep_supervision": True}})


# ------------------------------------------------------------- inference's use of the interface


def test_an_ensemble_of_both_kinds_predicts_gated_centres():
    from tilepipe.inference.ensemble import Ensemble
    from tilepipe.inference.windows import centre_grid

    torch.manual_seed(4)
    models = [
        build_model({"encoder": SMALL_TIMM, **NARROW}),
        build_model({"architecture": "UnetPlusPlus", "encoder": STRIDE4_TIMM, "decoder_attention": "scse"}),
    ]
    grid = centre_grid(128, 128, tile_size=64, keep=32)
    windows = grid.row(0)
    inputs = images(batch=len(windows), seed=8).numpy()
    common = {"tta": ["none", "hflip"], "device": torch.device("cpu"), "amp": False, "channels_last": False}
    ungated = Ensemble(models, clf_threshold=None, **common).predict_centres(inputs, grid, windows)
    all_pass = Ensemble(models, clf_threshold=0.0, **common).predict_centres(inputs, grid, windows)
    none_pass = Ensemble(models, clf_threshold=1.0, **common).predict_centres(inputs, grid, windows)
    assert len(ungated.centres) == len(windows) and none_pass.centres == []
    np.testing.assert_array_equal(ungated.clf, none_pass.clf)  # the heads run whatever the gate
    for (w1, c1, u1), (w2, c2, u2) in zip(ungated.centres, all_pass.centres, strict=True):
        assert w1 == w2 and c1.dtype == c2.dtype and (c1 == c2).all() and (u1 == u2).all()
