"""retinaseg: retinal vessel and artery/vein segmentation for colour fundus photographs."""

__version__ = "0.1.0"

from retinaseg.hookspecs import hookimpl  # noqa: E402  (plugins write `from retinaseg import hookimpl`)

__all__ = ["hookimpl", "__version__"]
