"""disc: the optic disc, which the vessel measurements are made relative to (zones B and C, disc diameters).

vesselnet's architecture trained for the task "disc" on IDRiD's disc masks. It works on the whole photo at a
coarse scale (the FOV 384 px across, shrunk as far as that takes: the disc needs context, not capillaries), and
the runner keeps the largest disc-like blob (retinaseg/disc.py).
"""
from retinaseg import hookimpl
from retinaseg.registry import Lazy, ModelSpec


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="disc",
        build=Lazy("retinaseg_plugins.impl.vesselnet:VesselNet"),
        description="optic disc segmenter: vesselnet's architecture trained on IDRiD disc masks; options: width "
                    "(16), depth (4)",
        options={"width": 16, "depth": 4, "dropblock": 0.0},
        task="disc",
        fov_diameter=384,
        size_divisor=16,
        max_downscale=0,
        weights="disc.pt",
    ))
