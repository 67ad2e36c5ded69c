"""retinaseg-frangi: Frangi multiscale vesselness as a retinaseg model plugin.

This module only declares the model, so listing plugins does not import torch; the network is in vesselness.py,
named by registry.Lazy and imported when a run builds it.
"""
from retinaseg import hookimpl
from retinaseg.registry import Lazy, ModelSpec


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="frangi",
        build=Lazy("retinaseg_frangi.vesselness:Frangi"),
        description="Frangi multiscale vesselness on the green channel; classical, needs no training",
        options={"threshold": 0.05},
        fov_diameter=540,
        size_divisor=1,
        weights=None,
    ))
