import itertools
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from tilepipe.config import FIRST_PLACE_PARTS, defaults
from tilepipe.errors import InputError
from tilepipe.model import (
    DEFAULT_SETTINGS,
    build_model,
    checkpoint_settings,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from tilepipe.model.encoders import DOWNLOAD_TIMEOUT

# resnet18 with a narrow decoder: the same wiring as the recipe, fast on a CPU
SMALL = {"encoder": "resnet18", "center_channels": 32, "decoder_channels": 16}
SWITCHES = ("cbam", "hypercolumns", "deep_supervision", "clf_head")


RECIPE_MODEL = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/hubmap_1st_place.yaml").read_text())[
    "model"
]


def images(batch: int = 2, size: int = 64, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def run(model: torch.nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def trained_small_model() -> torch.nn.Module:
    """SMALL with every head, one training step taken (so batch-norm statistics differ from their init), in eval mode."""
    torch.manual_seed(0)
    model = build_model(SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    outputs = model(images())
    (outputs["logits"].mean() + sum(d.mean() for d in outputs["deep"]) + outputs["clf"].mean()).backward()
    optimizer.step()
    return model.eval()


@pytest.mark.parametrize(
    "switches", list(itertools.product([False, True], repeat=4)), ids=lambda s: "".join("01"[v] for v in s)
)
def test_output_shapes_for_every_switch_combination(switches):
    settings = {**SMALL, **dict(zip(SWITCHES, switches, strict=False))}
    outputs = run(build_model(settings).eval(), images())
    flags = dict(zip(SWITCHES, switches, strict=False))
    assert outputs["logits"].shape == (2, 1, 64, 64)
    assert ("deep" in outputs) == flags["deep_supervision"]
    assert ("clf" in outputs) == flags["clf_head"]
    if flags["deep_supervision"]:
        assert [d.shape for d in outputs["deep"]] == [(2, 1, 64, 64)] * 4
    if flags["clf_head"]:
        assert outputs["clf"].shape == (2, 1)


def test_recipe_decoder_layout_on_resnet34():
    model = build_model({"encoder": "resnet34", "center_channels": 512, "decoder_channels": 64})
    assert [block.conv1.in_channels for block in model.decoder.blocks] == [512 + 512, 256 + 64, 128 + 64, 64 + 64, 64]
    assert model.decoder.center.out_channels == 512
    assert model.segmentation_head.layers[0].in_channels == 5 * 64
    outputs = run(model.eval(), images(batch=2, size=64))
    assert outputs["logits"].shape == (2, 1, 64, 64) and outputs["clf"].shape == (2, 1)


def test_se_resnext50_builds_and_runs():
    model = build_model({"encoder": "se_resnext50_32x4d"}).eval()
    assert model.encoder.out_channels == (64, 256, 512, 1024, 2048)
    assert model.classification_head.layers[1].in_features == 2048
    outputs = run(model, images(batch=2, size=64))
    assert outputs["logits"].shape == (2, 1, 64, 64) and len(outputs["deep"]) == 4 and outputs["clf"].shape == (2, 1)


def test_missing_settings_take_the_schema_defaults():
    assert defaults("model") == DEFAULT_SETTINGS
    model = build_model({}).eval()
    assert model.encoder.out_channels[-1] == 512  # the schema's (demo) encoder, resnet18


def test_the_recipe_network_is_se_resnext101():
    model = build_model({**RECIPE_MODEL, "encoder_weights": None}).eval()
    assert len(model.encoder.stages[3]) == 23  # layer3 of the 101-layer variant
    outputs = run(model, images(batch=1, size=64))
    assert outputs["logits"].shape == (1, 1, 64, 64)


def test_split_api_equals_forward(trained_small_model):
    x = images(seed=1)
    outputs = run(trained_small_model, x)
    with torch.no_grad():
        features = trained_small_model.encode(x)
        assert len(features) == 5
        assert torch.equal(trained_small_model.classify(features), outputs["clf"])
        assert torch.equal(trained_small_model.segment(features), outputs["logits"])


def test_classify_without_a_classification_head_fails():
    model = build_model({**SMALL, "clf_head": False}).eval()
    assert not model.has_classifier
    with torch.no_grad(), pytest.raises(RuntimeError, match="no classification head"):
        model.classify(model.encode(images()))


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        build_model(SMALL).encode(images(size=48))


def test_other_input_channel_counts():
    model = build_model({**SMALL, "in_channels": 4}).eval()
    assert run(model, images(channels=4))["logits"].shape == (2, 1, 64, 64)


def test_same_seed_same_parameters_other_seed_other_parameters():
    def parameters(seed: int) -> dict:
        torch.manual_seed(seed)
        return build_model(SMALL).state_dict()

    first, again, other = parameters(3), parameters(3), parameters(4)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["decoder.center.weight"], other["decoder.center.weight"])
    assert not torch.equal(first["encoder.stages.0.0.weight"], other["encoder.stages.0.0.weight"])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, trained_small_model):
    path = tmp_path / "fold0" / "model.pt"
    optimizer = torch.optim.Adam(trained_small_model.parameters())
    save_checkpoint(
        path, trained_small_model, SMALL, extra={"epoch": 3, "dice": 0.91, "optimizer": optimizer.state_dict()}
    )
    rng_before = torch.get_rng_state()
    loaded = load_checkpoint(path)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not loaded.training
    x = images(seed=2)
    expected, actual = run(trained_small_model, x), run(loaded, x)
    assert torch.equal(actual["logits"], expected["logits"])
    assert torch.equal(actual["clf"], expected["clf"])
    assert all(torch.equal(a, e) for a, e in zip(actual["deep"], expected["deep"], strict=False))
    assert checkpoint_settings(path) == {**DEFAULT_SETTINGS, **SMALL, **dict.fromkeys(FIRST_PLACE_PARTS, True)}
    assert read_checkpoint(path)["extra"]["epoch"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_checkpoint_does_not_fetch_encoder_weights_again(tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    model = build_model({**SMALL, "encoder_weights": weights})
    save_checkpoint(tmp_path / "model.pt", model, {**SMALL, "encoder_weights": weights})
    weights.unlink()
    assert checkpoint_settings(tmp_path / "model.pt")["encoder_weights"] == str(weights)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert torch.equal(loaded.encoder.stages[0][0].weight, model.encoder.stages[0][0].weight)


def test_checkpoint_extra_must_be_plain(tmp_path):
    with pytest.raises(TypeError, match=r"extra\['when'\]"):
        save_checkpoint(tmp_path / "model.pt", build_model(SMALL), SMALL, extra={"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_files_that_are_not_checkpoints_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    for path in (garbage, plain, tmp_path / "missing.pt"):
        with pytest.raises(InputError, match=path.name):
            load_checkpoint(path)


def test_checkpoint_whose_state_dict_does_not_fit_its_settings(tmp_path, trained_small_model):
    path = tmp_path / "model.pt"
    save_checkpoint(path, trained_small_model, SMALL)
    payload = torch.load(path, weights_only=True)
    payload["settings"]["decoder_channels"] = 32
    torch.save(payload, path)
    with pytest.raises(InputError, match=r"model\.pt: does not fit .*wrong shapes: decoder"):
        load_checkpoint(path)


def test_encoder_weights_file_round_trip(tmp_path):
    torch.manual_seed(7)
    original = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(original.state_dict(), path)
    torch.manual_seed(8)
    model = build_model({**SMALL, "encoder_weights": str(path)})
    assert torch.equal(model.encoder.stages[0][0].weight, original.conv1.weight)
    assert torch.equal(model.encoder.stages[1][1][0].conv1.weight, original.layer1[0].conv1.weight)
    assert torch.equal(model.encoder.stages[4][1].bn2.running_var, original.layer4[1].bn2.running_var)


def test_mismatched_encoder_weights_name_the_file_and_keys(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(
        InputError, match=r"resnet34\.pth: does not fit the original resnet18 .*unexpected keys: layer1\.2\."
    ):
        build_model({**SMALL, "encoder_weights": str(path)})
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("weights")
    with pytest.raises(InputError, match="garbage.pth: cannot read"):
        build_model({**SMALL, "encoder_weights": str(garbage)})


def test_unknown_encoder_and_settings_are_rejected():
    with pytest.raises(InputError, match="model.encoder: unknown encoder 'vgg11'; known: se_resnext101_32x4d, "):
        build_model({"encoder": "vgg11"})
    with pytest.raises(InputError, match="model.dropout: unknown setting"):
        build_model({**SMALL, "dropout": 0.5})
    with pytest.raises(InputError, match="model.cbam: expected true, false or null"):
        build_model({**SMALL, "cbam": "yes"})


@pytest.mark.parametrize("encoder", ["resnet18", "se_resnext50_32x4d"])
def test_imagenet_weights_offline_give_a_clear_error(encoder, monkeypatch, tmp_path):
    timeouts = []

    def offline(url, *args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(InputError, match=f"could not download the ImageNet weights of {encoder} .*local path"):
        build_model({"encoder": encoder, "encoder_weights": "imagenet"})
    assert timeouts == [DOWNLOAD_TIMEOUT]  # a stalled link cannot hang the download
    assert socket.getdefaulttimeout() is None
