"""Checkpoint integrity: damaged weights are refused, intact and pre-digest checkpoints load, pickled code never runs."""

import os
import struct
import zipfile

import pytest
import torch

from tilepipe.errors import InputError
from tilepipe.model import build_model, load_checkpoint, load_ensemble, pretrained, read_checkpoint, save_checkpoint
from tilepipe.model.checkpoint import DIGEST_KEY, FORMAT
from tilepipe.model.pretrained import import_pretrained
from tilepipe.model.state_dicts import weights_digest

SMALL = {"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8}
FLIPPED = 4096  # bytes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SMALL).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    save_checkpoint(path, model, SMALL)
    return path


def largest_record(path):
    """Return ``(start, size)`` in bytes of the largest tensor record in the torch zip at ``path``.

    torch stores each tensor's bytes uncompressed as ``<archive>/data/<key>``;
    the record starts after its local header (30 bytes, the name, the extra field).
    """
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_an_intact_checkpoint_carries_its_digest_and_loads(saved, model):
    assert torch.load(saved, weights_only=True)[DIGEST_KEY] == weights_digest(model.state_dict())
    assert weights_digest(model.state_dict()).startswith("sha256:") and len(weights_digest(model.state_dict())) == 71
    assert same_weights(load_checkpoint(saved), model)


def test_4_kb_flipped_inside_a_tensor_is_refused_naming_the_file(tmp_path, saved):
    damaged = tmp_path / "fold0" / "model.pt"
    damaged.parent.mkdir()
    data = bytearray(saved.read_bytes())
    start, size = largest_record(saved)
    assert size > 4 * FLIPPED
    middle = start + size // 2 - FLIPPED // 2
    data[middle : middle + FLIPPED] = bytes(b ^ 0xFF for b in data[middle : middle + FLIPPED])
    damaged.write_bytes(bytes(data))
    payload = torch.load(damaged, weights_only=True)  # the zip and the pickle are intact: torch reads it silently
    assert payload[DIGEST_KEY] != weights_digest(payload["state_dict"])

    problem = f"{damaged}: weights do not match their digest: the file is corrupt; re-train or restore it"
    for load in (read_checkpoint, load_checkpoint, lambda path: load_ensemble([saved, path])):
        with pytest.raises(InputError) as err:
            load(damaged)
        assert str(err.value) == problem and err.value.path == str(damaged)
    with pytest.raises(InputError, match="weights do not match their digest"):
        import_pretrained(damaged, tmp_path / "imported.pt")
    assert not (tmp_path / "imported.pt").exists()


def test_a_checkpoint_written_before_the_digest_still_loads(tmp_path, saved, model):
    payload = torch.load(saved, weights_only=True)
    del payload[DIGEST_KEY]
    torch.save(payload, tmp_path / "old.pt")
    assert same_weights(load_checkpoint(tmp_path / "old.pt"), model)
    assert import_pretrained(tmp_path / "old.pt", tmp_path / "copy.pt")["kind"] == "tilepipe"
    copied = torch.load(tmp_path / "copy.pt", weights_only=True)  # the imported copy gets the digest
    assert copied[DIGEST_KEY] == weights_digest(model.state_dict())
    assert same_weights(load_checkpoint(tmp_path / "copy.pt"), model)


def test_imported_first_place_weights_carry_the_digest(tmp_path, model, monkeypatch):
    # The 1st-place network itself is large: stand the small one in for it (what matters is how it is written).
    monkeypatch.setattr(pretrained, "first_place_network", lambda loaded, path: model)
    monkeypatch.setattr(pretrained, "FIRST_PLACE_SETTINGS", SMALL)
    torch.save({"any": torch.zeros(1)}, tmp_path / "model_seed0_fold0_bestscore.pth")
    assert (
        import_pretrained(tmp_path / "model_seed0_fold0_bestscore.pth", tmp_path / "model.pt")["kind"] == "first_place"
    )
    assert torch.load(tmp_path / "model.pt", weights_only=True)[DIGEST_KEY] == weights_digest(model.state_dict())


class RunsCode:
    """Unpickling this runs a shell command (what a malicious model.pt would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_a_pickle_that_runs_code_is_refused_and_the_code_never_runs(tmp_path, model):
    marker = tmp_path / "code-ran"
    path = tmp_path / "fold0" / "model.pt"
    path.parent.mkdir()
    payload = {"format": FORMAT, "settings": SMALL, "state_dict": model.state_dict(), "extra": {"x": RunsCode(marker)}}
    torch.save(payload, path)
    for load in (
        read_checkpoint,
        load_checkpoint,
        lambda p: load_ensemble([p]),
        lambda p: import_pretrained(p, tmp_path / "x"),
    ):
        with pytest.raises(InputError) as err:
            load(path)
        assert err.value.path == str(path) and "cannot read as a torch weights file" in str(err.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file is armed: an unrestricted unpickler runs the command
    assert marker.exists()
