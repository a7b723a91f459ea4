"""Stage-1 fold models from a folder: tilepipe checkpoints copied, 1st-place state dicts imported with their geometry."""

import pytest
import torch

from tilepipe.errors import InputError
from tilepipe.model import build_model, checkpoint_geometry, load_checkpoint, save_checkpoint
from tilepipe.model.first_place import (
    FIRST_PLACE_SETTINGS,
    HYPERCOLUMN_WEIGHT,
    first_place_key,
    reverse_hypercolumn_blocks,
)
from tilepipe.model.pretrained import FIRST_PLACE_GEOMETRY, import_pretrained, pretrained_file

SMALL = {"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8}


def test_the_fold_file_is_found_and_must_be_unique(tmp_path):
    (tmp_path / "fold0").mkdir()
    (tmp_path / "fold0" / "model.pt").write_bytes(b"")
    (tmp_path / "model_seed0_fold1_bestscore.pth").write_bytes(b"")
    assert pretrained_file(tmp_path, 0) == tmp_path / "fold0" / "model.pt"
    assert pretrained_file(tmp_path, 1) == tmp_path / "model_seed0_fold1_bestscore.pth"
    with pytest.raises(InputError, match=r"pretrained.stage1 has no fold2/model.pt or model_seed0_fold2_bestscore.pth"):
        pretrained_file(tmp_path, 2)
    (tmp_path / "model_seed0_fold0_bestscore.pth").write_bytes(b"")
    with pytest.raises(InputError, match="pretrained.stage1 holds both"):
        pretrained_file(tmp_path, 0)


def test_a_tilepipe_checkpoint_is_copied_as_it_is(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "model.pt", build_model(SMALL), SMALL)
    assert import_pretrained(tmp_path / "model.pt", tmp_path / "out.pt")["kind"] == "tilepipe"
    assert (tmp_path / "out.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()


def test_their_state_dict_is_imported_with_their_geometry(tmp_path):
    """A state dict under their key names (what their training saved) comes back as the same network."""
    torch.manual_seed(0)
    ours = build_model(FIRST_PLACE_SETTINGS).eval()
    theirs = {
        f"module.{first_place_key(k)}": reverse_hypercolumn_blocks(v) if k == HYPERCOLUMN_WEIGHT else v
        for k, v in ours.state_dict().items()
    }
    torch.save(theirs, tmp_path / "model_seed0_fold0_bestscore.pth")
    done = import_pretrained(tmp_path / "model_seed0_fold0_bestscore.pth", tmp_path / "model.pt")
    assert done["kind"] == "first_place"
    assert checkpoint_geometry(tmp_path / "model.pt") == FIRST_PLACE_GEOMETRY
    loaded = load_checkpoint(tmp_path / "model.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)["logits"], ours(x)["logits"], rtol=0, atol=1e-5)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="junk.pth"):
        import_pretrained(tmp_path / "junk.pth", tmp_path / "junk.pt")
    assert not (tmp_path / "junk.pt").exists()
