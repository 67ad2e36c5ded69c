"""Each loss: value on a known case, FOV restriction, and a finite gradient that lowers it."""
import pytest
import torch
import torch.nn.functional as F

from retinaseg.registry import all_losses, get_loss

BINARY = ["bce", "dice", "bce-dice", "focal", "focal-dice", "cldice"]


def _vessel_batch():
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 14:18, :] = 1  # horizontal vessel
    target[:, :, :, 8:10] = 1  # vertical vessel
    fov = torch.ones_like(target)
    fov[:, :, :, 28:] = 0
    return target, fov


@pytest.mark.parametrize("name", BINARY)
def test_binary_loss_is_lower_for_a_better_prediction_and_has_gradients(name):
    target, fov = _vessel_batch()
    loss = get_loss(name).build()
    good = (target * 2 - 1) * 4
    bad = torch.zeros_like(target)
    assert float(loss(good, target, fov)) < float(loss(bad, target, fov))
    logits = torch.zeros_like(target, requires_grad=True)
    value = loss(logits, target, fov)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # one gradient step lowers the loss
    with torch.no_grad():
        stepped = logits - 5.0 * logits.grad / logits.grad.abs().max()
    assert float(loss(stepped, target, fov)) < float(value.detach())


@pytest.mark.parametrize("name", BINARY + ["ce"])
def test_pixels_outside_the_fov_do_not_count(name):
    target, fov = _vessel_batch()
    if name == "ce":
        target = torch.cat([1 - target, target, torch.zeros_like(target), torch.zeros_like(target)], dim=1)
        logits = torch.randn(2, 4, 32, 32)
    else:
        logits = torch.randn_like(target)
    loss = get_loss(name).build()
    changed = logits.clone()
    changed[..., 28:] = 100.0
    assert float(loss(logits, target, fov)) == pytest.approx(float(loss(changed, target, fov)), rel=1e-5)


def test_bce_value_matches_torch():
    target, fov = _vessel_batch()
    logits = torch.randn_like(target)
    expected = F.binary_cross_entropy_with_logits(logits[..., :28], target[..., :28])
    assert float(get_loss("bce").build()(logits, target, fov)) == pytest.approx(float(expected), rel=1e-5)


def test_dice_and_focal_values_follow_the_seed_formulas():
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    fov = torch.ones_like(target)
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 1.0]]]])
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1e-6) / (p.sum() + target.sum() + 1e-6)
    assert float(get_loss("dice").build()(logits, target, fov)) == pytest.approx(float(dice), rel=1e-5)
    alpha, gamma = 0.25, 2.0
    focal = (-alpha * (1 - p) ** gamma * target * torch.log(p)
             - (1 - alpha) * p**gamma * (1 - target) * torch.log(1 - p)).mean()
    assert float(get_loss("focal").build()(logits, target, fov)) == pytest.approx(float(focal), rel=1e-5)
    combined = get_loss("focal-dice").build(lam=0.3)(logits, target, fov)
    assert float(combined) == pytest.approx(0.3 * float(focal) + 0.7 * float(dice), rel=1e-5)
    assert float(get_loss("focal-dice").build()(logits, target, fov)) == pytest.approx(float(focal + dice), rel=1e-5)


def test_cldice_is_zero_for_a_perfect_prediction_and_punishes_broken_vessels():
    target, fov = _vessel_batch()
    loss = get_loss("cldice").build(base="none")
    perfect = (target * 2 - 1) * 20
    broken = perfect.clone()
    broken[:, :, 14:18, 16:20] = -20  # a gap cuts the horizontal vessel
    assert float(loss(perfect, target, fov)) < 0.02
    assert float(loss(broken, target, fov)) > float(loss(perfect, target, fov))
    with pytest.raises(ValueError, match="base"):
        get_loss("cldice").build(base="nope")


def test_cross_entropy_for_av():
    torch.manual_seed(1)
    codes = torch.randint(0, 4, (2, 16, 16))
    target = F.one_hot(codes, 4).permute(0, 3, 1, 2).float()
    logits = torch.randn(2, 4, 16, 16)
    fov = torch.ones(2, 1, 16, 16)
    expected = F.cross_entropy(logits, codes)
    assert float(get_loss("ce").build()(logits, target, fov)) == pytest.approx(float(expected), rel=1e-5)
    assert all_losses()["ce"].task == "av"
