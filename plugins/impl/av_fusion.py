"""av-fusion: Learning_AVSegmentation's binary-to-multi fusion GAN for artery/vein segmentation.

Three generators see the photo: the main one (4 classes: background, artery, vein, uncertain, with side
outputs at three decoder depths) and two binary branches, one for arteries and one for veins, each trained on
its own vessel type with crossings counted in both (so neither has to decide the ambiguous crossing pixels).
The final decoder features of the three are fused by a mean before the main output layer. A patch
discriminator judges (photo, segmentation) pairs. Every generator's loss is cross-entropy + MSE between the
softmax and the one-hot label + an adversarial BCE term, with options ce_weight, mse_weight, adversarial_weight.
"""
import torch
import torch.nn.functional as F
from torch import nn

from retinaseg.av import ARTERY, UNCERTAIN, VEIN
from retinaseg.nets import EncoderDecoder
from retinaseg.registry import AV_CLASSES


def _block(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True))


class Generator(EncoderDecoder):
    """A U-Net that exposes its final decoder features and, optionally, side outputs at three decoder depths."""

    SIDE_DEPTHS = 3

    def __init__(self, in_channels: int, classes: int, width: int, depth: int = 4, side_outputs: bool = False):
        super().__init__(in_channels, width, depth, block=_block, upsample=lambda i, o: nn.Conv2d(i, o, 1),
                         interpolate=True)
        self.head = nn.Conv2d(width, classes, 1)
        # side heads on the decoder outputs at 1/8, 1/4 and 1/2 resolution
        self.sides = (nn.ModuleList(nn.Conv2d(self.channels[i], classes, 1) for i in (3, 2, 1)) if side_outputs
                      else None)

    def decoded(self, x: torch.Tensor):
        """(final decoder features, side outputs at the input's size)."""
        size = x.shape[-2:]
        x, decoded = self.features(x)
        sides = []
        if self.sides is not None:
            sides = [F.interpolate(head(feat), size=size, mode="bilinear", align_corners=False)
                     for head, feat in zip(self.sides, decoded[:self.SIDE_DEPTHS])]
        return x, sides


class AVFusion(nn.Module):
    def __init__(self, in_channels: int = 3, classes: int = AV_CLASSES, width: int = 8, depth: int = 4,
                 ce_weight: float = 1.0, mse_weight: float = 1.0, adversarial_weight: float = 0.01):
        super().__init__()
        if classes != AV_CLASSES:
            raise ValueError(f"av-fusion predicts {AV_CLASSES} classes")
        self.main = Generator(in_channels, classes, width, depth, side_outputs=True)
        self.artery = Generator(in_channels, 2, width, depth)
        self.vein = Generator(in_channels, 2, width, depth)
        self.loss_weights = {"ce": ce_weight, "mse": mse_weight, "adversarial": adversarial_weight}

    def forward_all(self, x: torch.Tensor) -> dict:
        main, sides = self.main.decoded(x)
        artery, _ = self.artery.decoded(x)
        vein, _ = self.vein.decoded(x)
        fused = (main + artery + vein) / 3
        return {"av": self.main.head(fused), "sides": sides,
                "artery": self.artery.head(artery), "vein": self.vein.head(vein)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)["av"]


class Discriminator(nn.Module):
    """PatchGAN: (photo, class probabilities) -> a map of real/fake logits."""

    def __init__(self, in_channels: int = 3 + AV_CLASSES, width: int = 16):
        super().__init__()
        layers, channels = [], in_channels
        for i, out in enumerate((width, width * 2, width * 4, width * 8)):
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1)]
            if i:
                layers += [nn.BatchNorm2d(out)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        layers += [nn.Conv2d(channels, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, image, probabilities):
        return self.net(torch.cat([image, probabilities], dim=1))


def _branch_target(target: torch.Tensor, code: int) -> torch.Tensor:
    """Two-class target (rest, this vessel type) with crossings counted as this type."""
    positive = (target[:, code] + target[:, UNCERTAIN]).clamp(0, 1)
    return torch.stack([1 - positive, positive], dim=1)


class FusionGANStep:
    """The training step the engine calls for av-fusion (ModelSpec.training_step)."""

    SIDE_WEIGHT = 0.5

    def __init__(self, model: AVFusion, loss, lr: float, weight_decay: float, device):
        self.model, self.ce, self.device = model, loss, device
        self.discriminator = Discriminator().to(device)
        self.g_optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.d_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.optimizers = [self.g_optimizer, self.d_optimizer]

    def _generator_loss(self, logits, target, fov, adversarial=None) -> torch.Tensor:
        w = self.model.loss_weights
        mse = (((torch.softmax(logits, 1) - target) ** 2).sum(1, keepdim=True) * fov).sum() / fov.sum().clamp_min(1)
        loss = w["ce"] * self.ce(logits, target, fov) + w["mse"] * mse
        if adversarial is not None:
            loss = loss + w["adversarial"] * adversarial
        return loss

    def __call__(self, images, targets, fov) -> dict:
        self.model.train()
        self.discriminator.train()
        out = self.model.forward_all(images)
        probabilities = torch.softmax(out["av"], 1) * fov
        # generator: fool the discriminator on the fused output
        fake = self.discriminator(images, probabilities)
        adversarial = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        g_loss = self._generator_loss(out["av"], targets, fov, adversarial)
        g_loss = g_loss + self.SIDE_WEIGHT * sum(self._generator_loss(s, targets, fov) for s in out["sides"])
        g_loss = g_loss + self._generator_loss(out["artery"], _branch_target(targets, ARTERY), fov)
        g_loss = g_loss + self._generator_loss(out["vein"], _branch_target(targets, VEIN), fov)
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        # discriminator: manual labels are real, predictions fake
        real = self.discriminator(images, targets * fov)
        fake = self.discriminator(images, probabilities.detach())
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) +
                  F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        return {"loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()),
                "adversarial": float(adversarial.detach())}

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "g": self.g_optimizer.state_dict(),
                "d": self.d_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_optimizer.load_state_dict(state["g"])
        self.d_optimizer.load_state_dict(state["d"])
