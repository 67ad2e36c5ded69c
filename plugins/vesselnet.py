"""vesselnet: the default vessel segmenter, a compact residual U-Net built for CPU speed (plugins/impl/vesselnet.py)."""
from retinaseg import hookimpl
from retinaseg.inference.views import View
from retinaseg.registry import Lazy, ModelSpec

# --tta: the photo as it is, and mirrored at 1.125x the working scale. On images held out of training this pair
# gained as much F1 as the four flips (docs/experiments.md) for about 2.3x the time instead of 4x.
TTA_VIEWS = (View(), View(scale=1.125, flip="h"))


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="vesselnet",
        build=Lazy("retinaseg_plugins.impl.vesselnet:VesselNet"),
        description="default vessel model: compact residual U-Net, fast on CPU; options: width (16), depth (4), "
                    "dropblock (0: DropBlock drop probability in training)",
        options={"width": 16, "depth": 4, "dropblock": 0.0},
        size_divisor=16,
        weights="vesselnet.pt",
        tta_views=TTA_VIEWS,
    ))
