"""unet: U-Net (as the Kaggle retina U-Net project), same-padding convolutions (plugins/impl/unet.py)."""
from retinaseg import hookimpl
from retinaseg.registry import Lazy, ModelSpec


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="unet",
        build=Lazy("retinaseg_plugins.impl.unet:UNet"),
        description="U-Net (as the Kaggle retina U-Net), same-padding convolutions; options: width (16), depth (4)",
        options={"width": 16, "depth": 4},
        size_divisor=16,
        weights="unet.pt",
    ))
