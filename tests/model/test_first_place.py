"""import_first_place against a test-only re-implementation of the 1st-place UNET_SERESNEXT101.

The reference below is written for these tests from the architecture of
``src/models.py`` in github.com/tikutikutiku/kaggle-hubmap (commit
615444e86f4fb5ab916c0b66d311a307f4e4dd27): the same module names (so the same
state-dict keys) and the same forward, with their backbone from
pretrainedmodels (its senet.py is identical to the copy they vendor). Weight
initialisation is not reproduced: the tests fill every tensor with random
values. ``first_place_keys.txt`` lists the keys and shapes of their state dict;
regenerate it with ``python -m tests.model.test_first_place``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pretrainedmodels
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from tilepipe.errors import InputError
from tilepipe.model import FIRST_PLACE_SETTINGS, build_model, import_first_place, resolve_settings
from tilepipe.model.checkpoint import FORMAT as CHECKPOINT_FORMAT
from tilepipe.model.first_place import (
    HYPERCOLUMN_WEIGHT,
    convert_state_dict,
    first_place_key,
    reverse_hypercolumn_blocks,
    tilepipe_key,
)

KEYS_FIXTURE = Path(__file__).with_name("first_place_keys.txt")
RECIPE = Path(__file__).resolve().parents[2] / "configs/hubmap_1st_place.yaml"
SIZES = [(64, 64), (96, 128)]
TOLERANCE = 1e-4


# --- the reference: their UNET_SERESNEXT101 with deepsupervision=True, clfhead=True, clf_threshold=None ---


def ref_conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def ref_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False)


class RefChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.global_maxpool = nn.AdaptiveMaxPool2d(1)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        hidden = channels // reduction
        self.fc = nn.Sequential(ref_conv1x1(channels, hidden), nn.ReLU(True), ref_conv1x1(hidden, channels))

    def forward(self, x):
        return torch.sigmoid(self.fc(self.global_maxpool(x)) + self.fc(self.global_avgpool(x)))


class RefSpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv3x3 = ref_conv3x3(2, 1)

    def forward(self, x):
        pooled = torch.cat([torch.max(x, dim=1, keepdim=True)[0], torch.mean(x, dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv3x3(pooled))


class RefCBAM(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.channel_attention = RefChannelAttention(channels, reduction)
        self.spatial_attention = RefSpatialAttention()

    def forward(self, x):
        x = x * self.channel_attention(x)
        return x * self.spatial_attention(x)


class RefCenterBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ref_conv3x3(in_channels, out_channels)

    def forward(self, x):
        return self.conv(x)


class RefDecodeBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.upsample = nn.Sequential()
        self.upsample.add_module("upsample", nn.Upsample(scale_factor=2, mode="nearest"))
        self.conv3x3_1 = ref_conv3x3(in_channels, in_channels)
        self.bn2 = nn.BatchNorm2d(in_channels)
        self.conv3x3_2 = ref_conv3x3(in_channels, out_channels)
        self.cbam = RefCBAM(out_channels, reduction=16)
        self.conv1x1 = ref_conv1x1(in_channels, out_channels)

    def forward(self, inputs):
        x = self.conv3x3_1(self.upsample(F.relu(self.bn1(inputs))))
        x = self.cbam(self.conv3x3_2(F.relu(self.bn2(x))))
        return x + self.conv1x1(self.upsample(inputs))


class RefUnetSeResNext101(nn.Module):
    def __init__(self):
        super().__init__()
        backbone = pretrainedmodels.se_resnext101_32x4d(pretrained=None)
        layer0 = backbone.layer0
        self.encoder0 = nn.Sequential(layer0.conv1, layer0.bn1, layer0.relu1)
        self.encoder1 = nn.Sequential(layer0.pool, backbone.layer1)
        self.encoder2 = backbone.layer2
        self.encoder3 = backbone.layer3
        self.encoder4 = backbone.layer4
        self.center = RefCenterBlock(2048, 512)
        self.decoder4 = RefDecodeBlock(512 + 2048, 64)
        self.decoder3 = RefDecodeBlock(64 + 1024, 64)
        self.decoder2 = RefDecodeBlock(64 + 512, 64)
        self.decoder1 = RefDecodeBlock(64 + 256, 64)
        self.decoder0 = RefDecodeBlock(64, 64)
        self.upsample4 = nn.Upsample(scale_factor=16, mode="bilinear", align_corners=True)
        self.upsample3 = nn.Upsample(scale_factor=8, mode="bilinear", align_corners=True)
        self.upsample2 = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=True)
        self.upsample1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.deep4 = ref_conv1x1(64, 1)
        self.deep3 = ref_conv1x1(64, 1)
        self.deep2 = ref_conv1x1(64, 1)
        self.deep1 = ref_conv1x1(64, 1)
        self.final_conv = nn.Sequential(ref_conv3x3(320, 64), nn.ELU(True), ref_conv1x1(64, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.clf = nn.Sequential(
            nn.BatchNorm1d(2048), nn.Linear(2048, 512), nn.ELU(True), nn.BatchNorm1d(512), nn.Linear(512, 1)
        )

    def forward(self, inputs):
        x1 = self.encoder1(self.encoder0(inputs))
        x2 = self.encoder2(x1)
        x3 = self.encoder3(x2)
        x4 = self.encoder4(x3)
        logits_clf = self.clf(self.avgpool(x4).squeeze(-1).squeeze(-1))
        y4 = self.decoder4(torch.cat([x4, self.center(x4)], dim=1))
        y3 = self.decoder3(torch.cat([x3, y4], dim=1))
        y2 = self.decoder2(torch.cat([x2, y3], dim=1))
        y1 = self.decoder1(torch.cat([x1, y2], dim=1))
        y0 = self.decoder0(y1)
        y4, y3, y2, y1 = self.upsample4(y4), self.upsample3(y3), self.upsample2(y2), self.upsample1(y1)
        logits = self.final_conv(torch.cat([y0, y1, y2, y3, y4], dim=1))
        deeps = [self.deep4(y4), self.deep3(y3), self.deep2(y2), self.deep1(y1)]
        return logits, deeps, logits_clf


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Fill every tensor of ``model`` with seeded random values of a sane scale (batch norms far from identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(int(torch.randint(1, 1000, (), generator=generator)))
            elif tensor.dim() > 1:  # conv and linear weights
                tensor.normal_(0.0, (tensor[0].numel()) ** -0.5, generator=generator)
            elif name.endswith(("running_var", "weight")):  # batch-norm scales
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:  # biases and running means
                tensor.normal_(0.0, 0.2, generator=generator)
    return model


def build_reference(seed: int = 0) -> RefUnetSeResNext101:
    with torch.device("meta"):
        model = RefUnetSeResNext101()
    return randomize_(model.to_empty(device="cpu"), seed).eval()


def key_lines(state_dict: dict[str, torch.Tensor]) -> list[str]:
    return [f"{key} {json.dumps(list(value.shape), separators=(',', ':'))}" for key, value in state_dict.items()]


def read_key_fixture() -> dict[str, list[int]]:
    lines = KEYS_FIXTURE.read_text().splitlines()
    pairs = [line.split(" ") for line in lines if line and not line.startswith("#")]
    return {key: json.loads(shape) for key, shape in pairs}


def write_key_fixture() -> None:
    header = [
        "# Keys and shapes of the state dict of UNET_SERESNEXT101 (src/models.py of github.com/tikutikutiku/kaggle-hubmap,",
        "# commit 615444e86f4fb5ab916c0b66d311a307f4e4dd27), in order; written by `python -m tests.model.test_first_place`.",
    ]
    KEYS_FIXTURE.write_text("\n".join(header + key_lines(build_reference().state_dict())) + "\n")


def shapes_only_state_dict(prefix: str = "") -> dict[str, torch.Tensor]:
    """Their keys and shapes from the fixture, every tensor a zero-stride view of one zero: tiny on disk."""
    zero, zero_count = torch.zeros(()), torch.zeros((), dtype=torch.long)
    return {
        prefix + key: (zero_count if key.endswith("num_batches_tracked") else zero).expand(shape)
        for key, shape in read_key_fixture().items()
    }


def their_outputs(model: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        logits, deeps, clf = model(x)
    return {"logits": logits, "deep": deeps, "clf": clf}


def our_outputs(model: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        return model(x)


def assert_outputs_equal(ours: dict, theirs: dict) -> None:
    assert set(ours) == {"logits", "deep", "clf"}
    torch.testing.assert_close(ours["logits"], theirs["logits"], rtol=0, atol=TOLERANCE)
    assert len(ours["deep"]) == len(theirs["deep"]) == 4
    for our_deep, their_deep in zip(ours["deep"], theirs["deep"], strict=True):
        torch.testing.assert_close(our_deep, their_deep, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(ours["clf"], theirs["clf"], rtol=0, atol=TOLERANCE)


def image(size: tuple[int, int], seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


# --- fixtures: one reference, one saved file, one import, shared by the module ---


@pytest.fixture(scope="module")
def reference() -> RefUnetSeResNext101:
    return build_reference()


@pytest.fixture(scope="module")
def reference_file(reference, tmp_path_factory):
    """Their state dict as their training script saves it (~540 MB), deleted after the module's tests."""
    path = tmp_path_factory.mktemp("first_place") / "model_seed0_fold0_bestscore.pth"
    torch.save(reference.state_dict(), path)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def imported(reference_file):
    return import_first_place(reference_file)


# --- 1. the key fixture, the mapping, equal outputs ---


def test_key_fixture_lists_the_reference_state_dict(reference):
    assert key_lines(reference.state_dict()) == [
        line for line in KEYS_FIXTURE.read_text().splitlines() if line and not line.startswith("#")
    ]


def test_the_key_map_is_a_bijection_onto_tilepipes_keys():
    theirs = read_key_fixture()
    with torch.device("meta"):
        ours = build_model(FIRST_PLACE_SETTINGS).state_dict()
    mapped = {key: tilepipe_key(key) for key in theirs}
    assert None not in mapped.values()
    assert sorted(mapped.values()) == sorted(ours)
    assert all(first_place_key(our_key) == key for key, our_key in mapped.items())
    assert all(tuple(ours[our_key].shape) == tuple(theirs[key]) for key, our_key in mapped.items())


def test_settings_are_the_recipes_without_the_imagenet_fetch():
    recipe = yaml.safe_load(RECIPE.read_text())["model"]
    assert resolve_settings({**recipe, "encoder_weights": None}) == resolve_settings(FIRST_PLACE_SETTINGS)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_outputs_equal_theirs(reference, imported, size):
    x = image(size)
    theirs = their_outputs(reference, x)
    assert theirs["logits"].shape == (1, 1, *size)
    assert 0.1 < theirs["logits"].std() < 100  # informative outputs, not saturated or vanishing
    assert_outputs_equal(our_outputs(imported, x), theirs)


def test_imported_model_is_float32_in_eval_mode_on_the_cpu(imported):
    assert not imported.training and not any(module.training for module in imported.modules())
    tensors = [*imported.parameters(), *imported.buffers()]
    assert {t.device.type for t in tensors} == {"cpu"}
    assert {t.dtype for t in imported.parameters()} == {torch.float32}
    assert all(p.requires_grad for p in imported.parameters())


def test_data_parallel_prefix_gives_the_same_model(reference, imported, tmp_path):
    path = tmp_path / "model_seed0_fold1_bestscore.pth"
    torch.save({f"module.{key}": value for key, value in reference.state_dict().items()}, path)
    again = import_first_place(path)
    path.unlink()
    ours, theirs = imported.state_dict(), again.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_half_precision_weights_load_as_float32(tmp_path):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in shapes_only_state_dict().items()}, path)
    model = import_first_place(path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(p.is_contiguous() for p in model.parameters())  # zero-stride views were materialised


# --- 2. files that are not their state dict ---


def save(tmp_path: Path, state_dict: dict) -> Path:
    path = tmp_path / "model_seed0_fold3_bestscore.pth"
    torch.save(state_dict, path)
    return path


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "data_parallel"])
def test_missing_key_names_the_file_and_key(tmp_path, prefix):
    state_dict = shapes_only_state_dict(prefix)
    del state_dict[f"{prefix}decoder2.cbam.spatial_attention.conv3x3.weight"]
    with pytest.raises(InputError) as err:
        import_first_place(save(tmp_path, state_dict))
    assert str(err.value) == (
        f"{tmp_path / 'model_seed0_fold3_bestscore.pth'}: not a state dict of the 1st-place UNET_SERESNEXT101 "
        f"(se_resnext101_32x4d U-Net): missing keys: {prefix}decoder2.cbam.spatial_attention.conv3x3.weight"
    )


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "data_parallel"])
def test_unexpected_key_names_the_file_and_key(tmp_path, prefix):
    state_dict = shapes_only_state_dict(prefix)
    state_dict[f"{prefix}deep0.weight"] = torch.zeros(1, 64, 1, 1)
    with pytest.raises(
        InputError, match=rf"model_seed0_fold3_bestscore\.pth: .*: unexpected keys: {prefix}deep0\.weight$"
    ):
        import_first_place(save(tmp_path, state_dict))


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "data_parallel"])
def test_wrong_shape_names_the_file_key_and_shapes(tmp_path, prefix):
    state_dict = shapes_only_state_dict(prefix)
    state_dict[f"{prefix}final_conv.0.weight"] = torch.zeros(64, 256, 3, 3)
    with pytest.raises(
        InputError,
        match=rf"model_seed0_fold3_bestscore\.pth: .*: wrong shapes: {prefix}final_conv\.0\.weight "
        r"\(64, 256, 3, 3\) \(expected \(64, 320, 3, 3\)\)$",
    ):
        import_first_place(save(tmp_path, state_dict))


def test_many_problems_are_listed_together(tmp_path):
    state_dict = shapes_only_state_dict()
    for key in [key for key in state_dict if key.startswith("clf.")]:
        del state_dict[key]
    state_dict["encoder0.1.weight"] = torch.zeros(32)
    state_dict["upsample4.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as err:
        import_first_place(save(tmp_path, state_dict))
    message = str(err.value)
    assert (
        "missing keys: clf.0.weight, clf.0.bias, clf.0.running_mean, clf.0.running_var, clf.0.num_batches_tracked and 9 more"
        in message
    )
    assert "unexpected keys: upsample4.weight" in message
    assert "wrong shapes: encoder0.1.weight (32,) (expected (64,))" in message


def test_tilepipe_names_are_not_their_names(tmp_path):
    with torch.device("meta"):
        ours = build_model(FIRST_PLACE_SETTINGS).state_dict()
    zero = torch.zeros(())
    path = save(tmp_path, {key: zero.expand(value.shape) for key, value in ours.items()})
    with pytest.raises(InputError, match=r"missing keys: encoder0\.0\.weight.*unexpected keys: encoder\.stages\.0\.0"):
        import_first_place(path)


def test_other_files_are_rejected_with_their_name(tmp_path):
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    checkpoint = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "settings": {}, "state_dict": {}}, checkpoint)
    pickled_module = tmp_path / "module.pth"
    torch.save(nn.Linear(1, 1), pickled_module)  # a whole pickled model: refused by weights_only
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("weights")
    expected = [
        (not_a_dict, "found list"),
        (checkpoint, "tilepipe checkpoint"),
        (pickled_module, "cannot read"),
        (garbage, "cannot read"),
        (tmp_path / "absent.pth", "cannot read"),
    ]
    for path, problem in expected:
        with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: .*{problem}"):
            import_first_place(path)


# --- 3. the hypercolumn order ---


def test_their_hypercolumn_is_tilepipes_reversed(reference, imported):
    """Their final conv sees cat([y0, y1, y2, y3, y4]) (finest first); tilepipe's head gets [y4, ..., y0]."""
    seen = {}
    their_hook = reference.final_conv.register_forward_hook(lambda _m, args, _out: seen.update(theirs=args[0]))
    our_hook = imported.segmentation_head.register_forward_hook(lambda _m, args, _out: seen.update(ours=args[0]))
    try:
        x = image((64, 64), seed=2)
        their_outputs(reference, x)
        our_outputs(imported, x)
    finally:
        their_hook.remove()
        our_hook.remove()
    columns, hypercolumn = seen["ours"], seen["theirs"]
    assert [tuple(c.shape) for c in columns] == [(1, 64, 64, 64)] * 5
    their_blocks = hypercolumn.split(64, dim=1)
    for level, column in enumerate(columns):
        torch.testing.assert_close(column, their_blocks[4 - level], rtol=0, atol=TOLERANCE)
    assert not torch.allclose(columns[0], their_blocks[0], atol=1e-2)  # the order matters: the levels differ


def test_a_name_map_alone_gives_other_logits(reference, imported):
    """Without reversing the hypercolumn conv's input blocks the logits differ from theirs, with it they match."""
    state_dict = convert_state_dict(reference.state_dict())
    their_weight = reference.final_conv[0].weight
    assert torch.equal(state_dict[HYPERCOLUMN_WEIGHT], reverse_hypercolumn_blocks(their_weight))
    assert torch.equal(reverse_hypercolumn_blocks(state_dict[HYPERCOLUMN_WEIGHT]), their_weight)
    state_dict[HYPERCOLUMN_WEIGHT] = their_weight  # the plain renaming
    with torch.device("meta"):
        renamed_only = build_model(FIRST_PLACE_SETTINGS)
    renamed_only.load_state_dict(state_dict, assign=True)
    x = image((64, 64), seed=3)
    theirs = their_outputs(reference, x.clone())["logits"]
    torch.testing.assert_close(our_outputs(imported, x)["logits"], theirs, rtol=0, atol=TOLERANCE)
    wrong = our_outputs(renamed_only.eval(), x)["logits"]
    assert (wrong - theirs).abs().max() > 100 * TOLERANCE


if __name__ == "__main__":
    write_key_fixture()
