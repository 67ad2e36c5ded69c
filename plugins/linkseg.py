"""linkseg: LinkNet with a ResNet18 encoder and encoder-decoder links (plugins/impl/linkseg.py)."""
from retinaseg import hookimpl
from retinaseg.registry import Lazy, ModelSpec


@hookimpl
def register_models(register):
    register(ModelSpec(name="linkseg", build=Lazy("retinaseg_plugins.impl.linkseg:LinkSeg"),
                       description="LinkSeg: LinkNet, ResNet18 encoder, upsample+conv decoder, "
                                   "encoder-decoder links",
                       size_divisor=32, weights="linkseg.pt"))
