"""U-Nets with segmentation-models-pytorch encoders: ResNet34 (as ReSegNet) and EfficientNet-B0.

encoder_weights=None: nothing is downloaded; the weights come from our own training.
"""
from retinaseg import hookimpl
from retinaseg.registry import ModelSpec


def _unet(encoder: str):
    def build(in_channels: int = 3, classes: int = 1, **options):
        import segmentation_models_pytorch as smp  # imported on use: it is slow to import

        return smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes,
                        **options)
    return build


@hookimpl
def register_models(register):
    register(ModelSpec(name="unet-resnet34", build=_unet("resnet34"),
                       description="U-Net, ResNet34 encoder (as ReSegNet; segmentation-models-pytorch)",
                       size_divisor=32, weights="unet-resnet34.pt"))
    register(ModelSpec(name="unet-efficientnet-b0", build=_unet("efficientnet-b0"),
                       description="U-Net, EfficientNet-B0 encoder (as the EfficientNet-B0 U-Net project; "
                                   "segmentation-models-pytorch)",
                       size_divisor=32, weights="unet-efficientnet-b0.pt"))
