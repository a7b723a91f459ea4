"""Write tests/model/data/checkpoint_2d60475.pt: a checkpoint saved by tilepipe at commit 2d60475 (before
model.architecture), without its state dict, plus the network's outputs on a fixed input.

Run once against that commit's code (``PYTHONPATH=<a checkout of 2d60475> python tests/model/make_main_checkpoint.py``);
tests/model/test_architectures.py rebuilds the state dict (same seed, same perturbation, checked against the
stored digest) and checks that today's code loads the checkpoint and gives the same outputs.
The whole file would be 45 MB (a resnet18 encoder); without the state dict it is a few kB.
"""

import sys
import tempfile
from pathlib import Path

import torch

SETTINGS = {"encoder": "resnet18", "center_channels": 8, "decoder_channels": 8}
GEOMETRY = {"tile_size": 256, "input_size": 32, "read_level": 0, "mpp": 0.5, "mean": [0.5] * 3, "std": [0.25] * 3}
SEED = 14


def perturbed(state_dict: dict) -> dict:
    """The state dict with every float tensor moved off its init (running_var kept positive), deterministically."""
    generator = torch.Generator().manual_seed(SEED)
    out = {}
    for key, value in state_dict.items():
        if value.is_floating_point():
            noise = 0.05 * torch.randn(value.shape, generator=generator)
            value = (value + noise).abs() + 0.5 if key.endswith("running_var") else value + noise
        out[key] = value
    return out


def network(build_model):
    torch.manual_seed(SEED)
    model = build_model(SETTINGS)
    model.load_state_dict(perturbed(model.state_dict()))
    return model.eval()


def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(SEED + 1))


def main() -> None:
    from tilepipe.model import build_model, save_checkpoint

    torch.set_num_threads(1)
    model = network(build_model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        save_checkpoint(path, model, SETTINGS, extra={"epoch": 3, "dice": 0.5}, geometry=GEOMETRY)
        payload = torch.load(path, weights_only=True)
    with torch.no_grad():
        outputs = model(inputs())
    del payload["state_dict"]
    out = Path(__file__).with_name("data") / "checkpoint_2d60475.pt"
    torch.save({"payload": payload, "outputs": outputs}, out)
    print(out, out.stat().st_size, "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
