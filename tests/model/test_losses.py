import math

import pytest
import torch

from tilepipe.errors import InputError
from tilepipe.model.losses import SegmentationLoss, lovasz_hinge

LN2 = math.log(2)


def jaccard_loss_of_wrong_set(wrong: set[int], positives: set[int]) -> float:
    """|wrong| / |positives U wrong|: the Jaccard loss when exactly the pixels in ``wrong`` are mispredicted."""
    union = positives | wrong
    return len(wrong) / len(union) if union else 0.0


def brute_force_lovasz(logits: list[float], labels: list[int]) -> float:
    """The Lovasz extension of the Jaccard loss at the hinge errors, by its definition, for one flat image."""
    errors = [1 - logit * (2 * label - 1) for logit, label in zip(logits, labels, strict=False)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    positives = {i for i, label in enumerate(labels) if label == 1}
    loss, previous = 0.0, 0.0
    for k in range(1, len(order) + 1):
        current = jaccard_loss_of_wrong_set(set(order[:k]), positives)
        loss += max(errors[order[k - 1]], 0.0) * (current - previous)
        previous = current
    return loss


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_hinge_matches_the_definition(seed, per_image):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 3, generator=generator) * 2
    labels = (torch.rand(2, 3, 3, generator=generator) > 0.5).float()
    if seed == 0:
        labels[1] = 0  # an image without foreground
    if per_image:
        expected = (
            sum(
                brute_force_lovasz(logit.flatten().tolist(), y.flatten().int().tolist())
                for logit, y in zip(logits, labels, strict=False)
            )
            / 2
        )
    else:
        expected = brute_force_lovasz(logits.flatten().tolist(), labels.flatten().int().tolist())
    assert lovasz_hinge(logits, labels, per_image=per_image).item() == pytest.approx(expected, abs=1e-5)


def test_lovasz_hinge_accepts_a_channel_axis():
    logits = torch.randn(3, 1, 4, 5)
    labels = (torch.rand(3, 1, 4, 5) > 0.5).float()
    assert torch.equal(lovasz_hinge(logits, labels), lovasz_hinge(logits[:, 0], labels[:, 0]))


def test_lovasz_hinge_is_zero_when_every_pixel_is_right_with_a_large_margin():
    labels = (torch.rand(2, 4, 4) > 0.5).float()
    logits = (2 * labels - 1) * 10
    assert lovasz_hinge(logits, labels).item() == 0.0


@pytest.mark.parametrize(("logit", "label", "expected"), [(0.25, 1, 0.75), (0.25, 0, 1.25), (3.0, 1, 0.0)])
def test_lovasz_hinge_of_a_single_pixel_is_its_hinge(logit, label, expected):
    loss = lovasz_hinge(torch.tensor([[[logit]]]), torch.tensor([[[float(label)]]]))
    assert loss.item() == pytest.approx(expected)


def test_lovasz_hinge_of_an_empty_image_is_the_hinge_of_its_largest_logit():
    logits = torch.tensor([[[-3.0, -0.5], [-2.0, -4.0]]])
    assert lovasz_hinge(logits, torch.zeros_like(logits)).item() == pytest.approx(0.5)


def test_lovasz_hinge_gradient_reaches_the_wrong_pixels_only():
    labels = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    logits = torch.tensor([[[5.0, -5.0], [-1.0, 0.5]]], requires_grad=True)
    lovasz_hinge(logits, labels).backward()
    grad = logits.grad[0]
    assert grad[0, 0] == 0 and grad[0, 1] == 0  # right with a margin > 1
    assert grad[1, 0] < 0 and grad[1, 1] > 0  # push the missed positive up, the false positive down


def outputs_with_zero_logits(batch: int = 2, size: int = 4, deep: bool = True, clf: bool = True) -> dict:
    outputs = {"logits": torch.zeros(batch, 1, size, size, requires_grad=True)}
    if deep:
        outputs["deep"] = [torch.zeros(batch, 1, size, size, requires_grad=True) for _ in range(4)]
    if clf:
        outputs["clf"] = torch.zeros(batch, 1, requires_grad=True)
    return outputs


def one_full_one_empty_mask(size: int = 4) -> torch.Tensor:
    masks = torch.zeros(2, 1, size, size)
    masks[0, 0, :2, :3] = 1
    return masks


def test_zero_logits_cost_ln2_bce_and_one_lovasz_per_term():
    # logits 0: BCE = ln 2 per pixel; every hinge error is 1, so Lovasz = Jaccard loss of all pixels wrong = 1
    total, parts = SegmentationLoss()(outputs_with_zero_logits(), one_full_one_empty_mask())
    assert parts["bce"] == pytest.approx(LN2)
    assert parts["lovasz"] == pytest.approx(1.0)
    assert parts["deep"] == pytest.approx(4 * (LN2 + 1))  # the four heads on the non-empty image only
    assert parts["clf"] == pytest.approx(LN2)
    assert total.item() == pytest.approx(LN2 + 1 + 0.1 * 4 * (LN2 + 1) + LN2)
    assert parts["total"] == pytest.approx(total.item())


def test_deep_heads_ignore_images_with_empty_masks():
    masks = one_full_one_empty_mask()
    outputs = outputs_with_zero_logits(clf=False)
    _, reference = SegmentationLoss()(outputs, masks)
    for head in outputs["deep"]:
        head.data[1] = torch.randn(1, 4, 4) * 5  # the image whose mask is empty
    _, parts = SegmentationLoss()(outputs, masks)
    assert parts["deep"] == pytest.approx(reference["deep"])


def test_deep_heads_add_nothing_when_every_mask_is_empty():
    outputs = outputs_with_zero_logits(clf=False)
    for head in outputs["deep"]:
        head.data.normal_()
    total, parts = SegmentationLoss()(outputs, torch.zeros(2, 1, 4, 4))
    assert parts["deep"] == 0.0
    assert total.item() == pytest.approx(parts["bce"] + parts["lovasz"])
    total.backward()
    assert all(head.grad is not None and not head.grad.any() for head in outputs["deep"])


def test_clf_weight_scales_the_classification_bce():
    outputs = outputs_with_zero_logits(deep=False)
    outputs["clf"] = torch.tensor([[3.0], [-3.0]])
    masks = one_full_one_empty_mask()
    total, parts = SegmentationLoss({"clf": 2.5})(outputs, masks)
    # targets from the masks: [1, 0], both predicted right with margin 3
    assert parts["clf"] == pytest.approx(math.log1p(math.exp(-3)))
    assert total.item() == pytest.approx(LN2 + 1 + 2.5 * parts["clf"])
    _, wrong = SegmentationLoss()(outputs, masks, clf_target=torch.tensor([0.0, 1.0]))
    assert wrong["clf"] == pytest.approx(math.log1p(math.exp(3)))


def test_weights_select_the_terms():
    total, parts = SegmentationLoss({"bce": 0.0, "deep": 0.0, "clf": 0.0})(
        outputs_with_zero_logits(), one_full_one_empty_mask()
    )
    assert total.item() == pytest.approx(parts["lovasz"])


def test_missing_heads_are_skipped():
    total, parts = SegmentationLoss()(outputs_with_zero_logits(deep=False, clf=False), one_full_one_empty_mask())
    assert set(parts) == {"bce", "lovasz", "total"}
    assert total.item() == pytest.approx(LN2 + 1)


def test_loss_gradient_reaches_every_head():
    outputs = outputs_with_zero_logits()
    total, _ = SegmentationLoss()(outputs, one_full_one_empty_mask())
    total.backward()
    assert outputs["logits"].grad.abs().sum() > 0
    assert all(head.grad.abs().sum() > 0 for head in outputs["deep"])
    assert outputs["clf"].grad.abs().sum() > 0


def test_bad_weights_and_shapes_are_rejected():
    with pytest.raises(InputError, match="unknown key 'dice'"):
        SegmentationLoss({"dice": 1.0})
    with pytest.raises(InputError, match="clf must be a number"):
        SegmentationLoss({"clf": "high"})
    with pytest.raises(ValueError, match="do not match"):
        SegmentationLoss()(outputs_with_zero_logits(), torch.zeros(2, 4, 4))
