"""The built-in losses (declared in plugins/losses.py). Every loss counts only pixels inside the field of view.

Signature: loss(logits, target, fov) -> scalar. Binary losses take logits (B,1,H,W) and a soft target in
[0, 1] of the same shape; multi-class losses take logits (B,C,H,W) and class probabilities (B,C,H,W).
`fov` is (B,1,H,W), 1 inside the field of view.
"""
import torch
import torch.nn.functional as F

EPS = 1e-6

def _fov_mean(values: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
    return (values * fov).sum() / fov.sum().clamp_min(1.0)


def bce(logits, target, fov):
    return _fov_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), fov)


def soft_dice(probability, target, fov):
    """Dice loss 1 - (2 sum(p y) + eps) / (sum p + sum y + eps) over FOV pixels of the whole batch."""
    p, y = probability * fov, target * fov
    return 1 - (2 * (p * y).sum() + EPS) / (p.sum() + y.sum() + EPS)


def dice(logits, target, fov):
    return soft_dice(torch.sigmoid(logits), target, fov)


def focal(logits, target, fov, alpha: float = 0.25, gamma: float = 2.0):
    """Seed 003: -a (1-p)^g y log(p) - (1-a) p^g (1-y) log(1-p), computed from logits for stability."""
    p = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    loss = -alpha * (1 - p) ** gamma * target * log_p - (1 - alpha) * p**gamma * (1 - target) * log_not_p
    return _fov_mean(loss, fov)


def soft_skeleton(probability: torch.Tensor, iterations: int) -> torch.Tensor:
    """Soft morphological skeleton (Shit et al., CVPR 2021) by iterated min/max pooling."""

    def erode(x):
        return -torch.maximum(F.max_pool2d(-x, (3, 1), 1, (1, 0)), F.max_pool2d(-x, (1, 3), 1, (0, 1)))

    def dilate(x):
        return F.max_pool2d(x, 3, 1, 1)

    skeleton = F.relu(probability - dilate(erode(probability)))
    for _ in range(iterations):
        probability = erode(probability)
        delta = F.relu(probability - dilate(erode(probability)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def cldice(probability, target, fov, iterations: int = 5):
    """1 - soft-clDice: harmonic mean of topology precision and sensitivity."""
    p, y = probability * fov, target * fov
    skel_p, skel_y = soft_skeleton(p, iterations), soft_skeleton(y, iterations)
    precision = ((skel_p * y).sum() + EPS) / (skel_p.sum() + EPS)
    sensitivity = ((skel_y * p).sum() + EPS) / (skel_y.sum() + EPS)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity)


def cross_entropy(logits, target, fov):
    return _fov_mean(F.cross_entropy(logits, target, reduction="none")[:, None], fov)


def build_bce():
    return bce


def build_dice():
    return dice


def build_cross_entropy():
    return cross_entropy


def build_bce_dice(bce_weight: float = 1.0, dice_weight: float = 1.0):
    return lambda logits, target, fov: bce_weight * bce(logits, target, fov) + dice_weight * dice(logits, target, fov)


def build_focal(alpha: float = 0.25, gamma: float = 2.0):
    return lambda logits, target, fov: focal(logits, target, fov, alpha, gamma)


def build_focal_dice(alpha: float = 0.25, gamma: float = 2.0, lam: float = -1.0):
    """lam < 0 (default): focal + dice, the seed's plain sum; else lam * focal + (1 - lam) * dice."""
    def loss(logits, target, fov):
        f, d = focal(logits, target, fov, alpha, gamma), dice(logits, target, fov)
        return f + d if lam < 0 else lam * f + (1 - lam) * d
    return loss


def build_cldice(alpha: float = 0.5, base: str = "bce-dice", iterations: int = 5):
    """(1 - alpha) * base + alpha * clDice, base one of none, bce, dice, bce-dice; alpha=1 or base=none is
    pure clDice."""
    bases = {"none": None, "bce": bce, "dice": dice, "bce-dice": build_bce_dice()}
    if base not in bases:
        raise ValueError(f"cldice base must be one of {', '.join(bases)}; got {base!r}")
    base_loss = bases[base]

    def loss(logits, target, fov):
        topo = cldice(torch.sigmoid(logits), target, fov, iterations)
        if base_loss is None or alpha >= 1:
            return topo
        return (1 - alpha) * base_loss(logits, target, fov) + alpha * topo
    return loss
