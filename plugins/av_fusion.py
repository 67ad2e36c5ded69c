"""av-fusion: Learning_AVSegmentation's binary-to-multi fusion GAN for artery/vein segmentation
(plugins/impl/av_fusion.py), trained by its own step."""
from retinaseg import hookimpl
from retinaseg.registry import AV_CLASSES, Lazy, ModelSpec


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="av-fusion",
        build=Lazy("retinaseg_plugins.impl.av_fusion:AVFusion"),
        description="artery/vein fusion GAN (Learning_AVSegmentation): main + artery + vein generators, side outputs, "
                    "discriminator; options width (8), ce_weight, mse_weight, adversarial_weight",
        classes=AV_CLASSES,
        options={"width": 8},
        size_divisor=16,
        # Chosen on the HRF-AV training split (benchmarks/working_scale.py): FOV 760 px across beats 540 and 960.
        max_downscale=4.3,
        # Flip TTA raised weighted F1 on all 9 images held out of its training run (mean 0.724 -> 0.734).
        tta=True,
        weights="av-fusion.pt",
        training_step=Lazy("retinaseg_plugins.impl.av_fusion:FusionGANStep"),
    ))
