"""Loss plugins (plugins/impl/losses.py). Every loss counts only pixels inside the field of view."""
from retinaseg import hookimpl
from retinaseg.registry import Lazy, LossSpec


def _builder(name: str) -> Lazy:
    return Lazy(f"retinaseg_plugins.impl.losses:{name}")


@hookimpl
def register_losses(register):
    register(LossSpec("bce", _builder("build_bce"), "binary cross-entropy"))
    register(LossSpec("dice", _builder("build_dice"), "soft Dice loss"))
    register(LossSpec("bce-dice", _builder("build_bce_dice"), "BCE + Dice; options bce_weight, dice_weight"))
    register(LossSpec("focal", _builder("build_focal"), "focal loss (Lin et al.); options alpha=0.25, gamma=2"))
    register(LossSpec("focal-dice", _builder("build_focal_dice"), "focal + Dice, as the EfficientNet-B0 U-Net "
                      "project trained; options alpha, gamma, lam"))
    register(LossSpec("cldice", _builder("build_cldice"), "soft-clDice topology loss; options alpha=0.5, "
                      "base=none|bce|dice|bce-dice, iterations=5"))
    register(LossSpec("ce", _builder("build_cross_entropy"), "multi-class cross-entropy (A/V)", task="av"))
