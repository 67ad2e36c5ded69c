"""The in-memory segmenter: one loaded model, and how it segments a photo held in memory.

Each photo is resized so its FOV has the model's working diameter (or to a fixed --resize), predicted by tiles
or in one pass (with --tta once per test-time view, the views' probabilities averaged at the output's size), and
its probabilities are resized back to the raw size. Pixels outside the FOV are background. `retinaseg eval`,
the batch runner (runner.py), the benchmarks and the tests all segment through this class.

The working scale and back is rescale.py, the call of the network predictor.py, tiling sliding_window.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from retinaseg import av
from retinaseg.errors import ImageReadError, RetinasegError, shown
from retinaseg.fov import estimate_fov, measured_diameter
from retinaseg.inference.predictor import make_predictor
from retinaseg.inference.rescale import Prepared, gate_with_fov, to_raw_size, to_working_scale, vessels_of
from retinaseg.inference.sliding_window import SlidingWindow, predict_stream
from retinaseg.inference.views import PLAIN, View
from retinaseg.io.images import JPEG_REDUCTIONS, jpeg_size, read_photo
from retinaseg.models import LoadedModel, resolve_device
from retinaseg.preprocess import working_size

# A JPEG is decoded at 1/k of its size only where the network's input is still shrunk from it by at least this much
# (antialiased, as a photo decoded whole is): fixed before it was scored (docs/experiments.md, "JPEG photos decoded
# at a reduced size")
MIN_SHRINK_AFTER_DECODING = 1.5
DECODE_REDUCED = True


def jpeg_decoding() -> str:
    """How JPEG photos are decoded, as run.json and `retinaseg measure`'s rows record it."""
    return f"reduced, then shrunk at least {MIN_SHRINK_AFTER_DECODING}x" if DECODE_REDUCED else "whole"


@dataclass(frozen=True)
class SegmentConfig:
    device: str = "auto"
    # Batching gains nothing on CPU, and on a GPU batch 8 was slower than 1 on a long folder (docs).
    batch_size: int = 1
    tile_size: int = 512
    overlap: float = 0.25
    whole_image_pixels: int = 1280 * 1280
    tta: Optional[bool] = None  # None: the model's (ModelSpec.tta)
    resize: Optional[tuple] = None  # (width, height): fixed working size instead of the FOV scale
    max_downscale: Optional[float] = None  # None: the weights' or model's (LoadedModel.max_downscale); 0: no limit
    # FOV diameter (raw pixels) of photos whose FOV fills the frame: a crop inside the retina shows no edge to
    # measure, and scaling it as if the frame were the FOV shows its vessels too wide
    raw_fov_diameter: Optional[int] = None
    av_graph: Optional[bool] = None  # A/V models: one type per vessel (vessel_graph.consistent_av); None: the model's
    backend: str = "torch"  # or "onnxruntime" (CPU; `pip install retinaseg[onnx]`)

    def __post_init__(self):  # the CLI checks these where they enter; this guards callers of the library
        if self.batch_size < 1 or self.tile_size < 16 or not 0 <= self.overlap < 1:
            raise RetinasegError(f"invalid segmentation settings: batch_size {self.batch_size} (at least 1), "
                                 f"tile_size {self.tile_size} (at least 16), overlap {self.overlap} (0 to below 1)")


class Segmenter:
    """Segments photos in memory with one loaded model. A binary vessel model (vessel_model) may run beside it on
    each photo at its own working scale (and cap, unless config gives one): an A/V model then takes its
    vessel/background split from it, and a disc model's disc among rivals is the one its vessels converge on
    (disc.converging_disc)."""

    def __init__(self, model: LoadedModel, config: SegmentConfig = SegmentConfig(),
                 notify: Callable[[str], None] = print, vessel_model: Optional[LoadedModel] = None):
        self.model, self.notify = model, notify
        self.vessel_segmenter = None
        if vessel_model is not None:
            if model.classes == 1 and model.spec.task != "disc":
                raise RetinasegError(f"a vessel model goes with an A/V model (its vessels) or a disc model (its "
                                     f"disc among rivals); {model.spec.name!r} is itself a binary vessel model")
            if vessel_model.classes != 1:
                raise RetinasegError(f"the vessel model must be a binary vessel model; {vessel_model.spec.name!r} "
                                     f"has {vessel_model.classes} classes")
            # at its own working scale and test-time views, and its own cap on shrinking unless one is given (so
            # --max-downscale 0 brings both models to their working scales); otherwise as this one (device, tiles)
            own = replace(config, tta=None, av_graph=False)
            self.vessel_segmenter = Segmenter(vessel_model, own, notify)
        # ONNX Runtime runs on the CPU here, so "auto" means the CPU for it
        self.device = resolve_device("cpu" if config.backend == "onnxruntime" and config.device == "auto"
                                     else config.device)
        if config.max_downscale is None:
            config = replace(config, max_downscale=model.max_downscale)
        if config.tta is None:
            config = replace(config, tta=model.spec.tta)
        if config.av_graph is None:
            config = replace(config, av_graph=model.spec.av_graph and model.classes > 1)
        elif config.av_graph and model.classes == 1:
            raise RetinasegError(f"--av-graph gives each vessel one artery/vein type; {model.spec.name!r} is a "
                                 f"binary vessel model")
        self.config = config
        divisor = model.config["size_divisor"]
        tile = max(divisor, config.tile_size // divisor * divisor)
        self.window = SlidingWindow(tile_size=tile, overlap=config.overlap, size_divisor=divisor,
                                    whole_image_pixels=config.whole_image_pixels,
                                    channels_last=config.backend == "torch")
        # torch's is made on first use, so the runner's workers read the first photos meanwhile; ONNX Runtime's
        # export is checked here, before any photo
        self._predictor = make_predictor(model, self.device, notify, config.backend) \
            if config.backend != "torch" else None
        self.views = tuple(model.spec.tta_views) if config.tta else (PLAIN,)
        self._judge = None  # a disc model's default vessel model, loaded when first needed (_rival_judge)

    @property
    def predictor(self) -> Callable:
        """The network's batch -> probabilities function (predictor.py)."""
        if self._predictor is None:
            self._predictor = make_predictor(self.model, self.device, self.notify, self.config.backend)
        return self._predictor

    @predictor.setter
    def predictor(self, predictor: Callable) -> None:
        self._predictor = predictor

    def make_ready(self) -> None:
        """Makes the network's predictor (BatchNorm folded, on its device) now rather than on the first photo."""
        for segmenter in (self, self.vessel_segmenter):
            if segmenter is not None:
                segmenter.predictor

    def read(self, path, fov: Optional[np.ndarray] = None, fov_path=None,
             whole: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(photo, FOV mask, raw size) of the photo file at path, the FOV estimated unless given (read from fov_path,
        which an error names). A JPEG is decoded at 1/2, 1/4 or 1/8 of its size where every network that sees it
        still shrinks it by MIN_SHRINK_AFTER_DECODING (decode_reduction); the FOV mask and outputs keep the raw size.
        whole: the photo already decoded whole by the caller, used instead of decoding it again."""
        def decoded(reduction: int) -> np.ndarray:
            return whole if whole is not None and reduction == 1 else read_photo(path, reduction)

        raw_size = jpeg_size(path)
        if raw_size is None or (fov is not None and fov.shape != raw_size):  # read whole; the sizes checked below
            photo = decoded(1)
            raw_size, planned = photo.shape[:2], 1
        else:  # the reduction a FOV as wide as the frame allows, unless the FOV is known
            planned = self.decode_reduction(raw_size, fov)
            photo = decoded(planned)
        if fov is not None:
            if fov.shape != raw_size:
                raise ImageReadError(f"{shown(fov_path or 'the FOV mask')}: FOV mask is {fov.shape[1]}x{fov.shape[0]} "
                                     f"but {shown(Path(path).name)} is {raw_size[1]}x{raw_size[0]}")
            return photo, fov, raw_size
        fov = estimate_fov(photo, raw_size)
        reduction = self.decode_reduction(raw_size, fov)
        if reduction < planned:  # the FOV is smaller than the frame: decoded again, at a size that fits it
            photo = decoded(reduction)
        return photo, fov, raw_size

    def decode_reduction(self, raw_size: tuple, fov: Optional[np.ndarray] = None) -> int:
        """The largest JPEG reduction (8, 4 or 2; else 1) after which the photo is still shrunk by at least
        MIN_SHRINK_AFTER_DECODING to the working scale of every network that sees it: each test-time view, and the
        vessel model. Without a FOV mask, a FOV as wide as the frame's longer side."""
        if not DECODE_REDUCED:
            return 1
        diameter = measured_diameter(fov, self.config.raw_fov_diameter) if fov is not None else max(raw_size)
        shrink = self.least_shrink(raw_size, diameter)
        return next((k for k in JPEG_REDUCTIONS if shrink >= MIN_SHRINK_AFTER_DECODING * k), 1)

    def least_shrink(self, raw_size: tuple, diameter: int) -> float:
        """The least factor by which this model (at any of its views' scales) and its vessel model shrink a photo of
        raw_size with a FOV of this diameter."""
        shrinks = []
        for view in self.views:
            fixed, fov_diameter, cap = self._view_scaling(view)
            size = (fixed[1], fixed[0]) if fixed else working_size(raw_size, diameter, fov_diameter, cap)
            shrinks.append(min(raw_size[0] / size[0], raw_size[1] / size[1]))
        if self.vessel_segmenter is not None:
            shrinks.append(self.vessel_segmenter.least_shrink(raw_size, diameter))
        return min(shrinks)

    def prepare(self, photo: np.ndarray, fov: Optional[np.ndarray] = None, index: int = 0,
                raw_size: Optional[tuple] = None) -> Prepared:
        """The photo at the working scale with its view inputs (raw_size: the photo's, when it was decoded at a
        reduced size). The photo itself is kept on the result until the vessel model, if any, has run on it."""
        prepared = to_working_scale(photo, fov, self.model.fov_diameter, self.config.resize, index,
                                    self.vessel_segmenter is not None, self.config.max_downscale,
                                    self.config.raw_fov_diameter, raw_size)
        prepared.view_inputs = [self._view_input(photo, prepared, view) for view in self.views]
        return prepared

    def _view_input(self, photo: np.ndarray, prepared: Prepared, view: View) -> tuple:
        """(image framed for the network, FOV) of the FOV crop at the view's scale: the same raw region, so its
        prediction resizes back onto it."""
        image, fov = prepared.image, prepared.fov_work
        if view.scale != 1:
            fixed, fov_diameter, cap = self._view_scaling(view)
            scaled = to_working_scale(photo, prepared.fov_raw, fov_diameter, fixed, max_downscale=cap,
                                      raw_fov_diameter=self.config.raw_fov_diameter, raw_size=prepared.raw_size)
            image, fov = scaled.image, scaled.fov_work
        return self.window.frame(torch.flip(image, view.dims) if view.dims else image), fov

    def _view_scaling(self, view: View) -> tuple:
        """(fixed working size (width, height) or None, working FOV diameter, max downscale) at a view's scale."""
        fixed = self.config.resize and tuple(round(side * view.scale) for side in self.config.resize)
        cap = self.config.max_downscale
        return fixed, round(self.model.fov_diameter * view.scale), cap / view.scale if cap else cap

    def predict_prepared(self, items: Iterable[Prepared], as_seen: bool = False) -> Iterator[tuple[Prepared, list]]:
        """Yield (prepared, crop probabilities) in input order: one KxHxW tensor at the working scale, or with
        test-time views one per view at its own scale, flips undone and gated by the view's FOV (to_raw_size and
        to_work_size merge them). as_seen: each view's as the network saw it, for the process that writes the photo
        to bring back (views_undone) from the view inputs it holds, so the network's process does not."""
        pending: dict = {}

        def stream():
            for item in items:
                pending[item.index] = item
                for view, (image, _) in enumerate(item.view_inputs):
                    yield (item.index, view), image

        view_probs = []  # the current photo's, one per view, in the order of self.views
        for (index, _), prob in predict_stream(stream(), self.predictor, self.window, self.config.batch_size):
            view_probs.append(prob)
            if len(view_probs) < len(self.views):
                continue
            item = pending.pop(index)
            if as_seen:  # inline, the photo written is this one
                probs = view_probs
                item.spend_inputs()
            else:
                probs, item.view_inputs = self.views_undone(view_probs, item.view_inputs), None
            view_probs = []
            if self.vessel_segmenter is not None:
                item.vessel = self.vessel_segmenter.predict(item.photo, item.fov_raw, item.raw_size)
                item.photo = None
            yield item, probs

    def views_undone(self, probs: list, view_inputs: list) -> list:
        """Each view's probabilities as the network saw them, flip undone, outside the view's FOV background."""
        return [gate_with_fov(torch.flip(prob, view.dims) if view.dims else prob, fov)
                for prob, view, (_, fov) in zip(probs, self.views, view_inputs, strict=True)]

    def predict(self, photo: np.ndarray, fov: Optional[np.ndarray] = None,
                raw_size: Optional[tuple] = None, finished: bool = True, source=None) -> np.ndarray:
        """Raw-size probabilities (KxHxW) for one photo in memory (raw_size: its size, when decoded reduced; source:
        its file, if any); with finished False, the network's as they are, without the last step (finish)."""
        prepared = self.prepare(photo, fov, raw_size=raw_size)
        prepared.source = None if source is None else str(source)
        _, probs = next(self.predict_prepared([prepared]))
        prob = to_raw_size(probs, prepared)
        return self.finish(prob, prepared)[0] if finished else prob

    def predict_file(self, path, fov: Optional[np.ndarray] = None, finished: bool = True,
                     whole: Optional[np.ndarray] = None) -> np.ndarray:
        """Raw-size probabilities (KxHxW) for the photo file at path, read as `retinaseg run` reads it (whole: the
        photo already decoded whole, if the caller has it)."""
        photo, fov, raw_size = self.read(path, fov, whole=whole)
        return self.predict(photo, fov, raw_size, finished, source=path)

    def finish(self, prob: np.ndarray, prepared: Optional[Prepared] = None) -> tuple[np.ndarray, Optional[object]]:
        """The last step on a probability map at its output size (raw or working): with av_graph, one type per
        vessel; for a disc model, the one disc kept (among rivals, the one the vessels converge on, given the photo's
        prepared: keep_disc_among_rivals). Returns the map and what was found on the way: the vessel graph when one
        was built, the disc (disc.Disc) for a disc model."""
        if self.config.av_graph:
            from retinaseg.vessel_graph import consistent_av

            return consistent_av(prob)
        if self.model.spec.task == "disc":
            return self.keep_disc_among_rivals(prob, prepared)
        return prob, None

    def find_disc(self, prob: np.ndarray, vessels: Optional[np.ndarray] = None, fov: Optional[np.ndarray] = None):
        """disc.find_disc on a HxW map of this disc model, held to its weights file's own threshold for a firm disc,
        if the file sets one."""
        from retinaseg.disc import find_disc

        return find_disc(prob, vessels, fov, self.model.disc_min_probability)

    def keep_disc_among_rivals(self, prob: np.ndarray, prepared: Optional[Prepared]) -> tuple:
        """disc.keep_disc, the disc among rivals chosen by the vessels of the vessel model beside this one; without
        one, where the map has rivals, by the default vessel model's, run then on the photo's file (rare: a few
        photos in a hundred), so `run -m disc` keeps the disc `retinaseg measure` keeps."""
        from retinaseg.disc import keep_disc

        size = prob.shape[1:]
        firm = self.model.disc_min_probability  # the weights file's own, if it sets one
        kept = keep_disc(prob, *(vessels_of(prepared, size) if prepared else (None, None)), firm)
        if kept[1].rivals and prepared is not None and prepared.vessel is None and prepared.source:
            judge = self._rival_judge()
            if judge is not None:
                prepared.vessel = judge.predict_file(prepared.source, prepared.fov_raw)  # kept for the other size
                kept = keep_disc(prob, *vessels_of(prepared, size), firm)
        return kept

    def _rival_judge(self) -> Optional["Segmenter"]:
        """The default vessel model with its shipped weights, loaded at the first photo with rivals, on the CPU (it
        runs in the runner's forked workers, where CUDA cannot start); None where it cannot be loaded."""
        if self._judge is None:
            from retinaseg.models import DEFAULT_MODEL, load_model

            try:
                self._judge = Segmenter(load_model(DEFAULT_MODEL), SegmentConfig(device="cpu"), self.notify)
            except RetinasegError as exc:
                self.notify(f"warning: the disc among rivals is the largest: the vessel model that chooses it "
                            f"cannot be loaded ({exc})")
                self._judge = False
        return self._judge or None

    def settings(self) -> dict:
        """The settings in force, as run.json records them."""
        return {**asdict(self.config), "tile_size": self.window.tile_size, "size_divisor": self.window.size_divisor,
                "views": [str(view) for view in self.views], **self._decoding()}

    def _decoding(self) -> dict:
        """How the photo is decoded and the map read from the probabilities, where that has changed: a folder of
        maps made otherwise is not resumed into as if done."""
        decoding = {"jpeg_decoding": jpeg_decoding()}
        if self.model.spec.task == "disc":
            from retinaseg import disc
            from retinaseg.models import DEFAULT_MODEL, shipped_weights_sha256

            judge = "the vessel model" if self.vessel_segmenter is not None else \
                f"{DEFAULT_MODEL} (weights sha256 {str(shipped_weights_sha256(DEFAULT_MODEL))[:16]})"
            return {**decoding, "disc_grown_to": disc.GROW_TO, "disc_among_rivals": f"{disc.AMONG_RIVALS} of {judge}"}
        if self.model.classes > 1:
            decoding["av_decoding"] = "vessel first" if av.VESSEL_FIRST else "arg-max"
        return decoding

    def describe(self) -> dict:
        """Which model and weights segment, with their settings: what made a folder's outputs."""
        model = self.model
        return {"model": model.spec.name, "model_config": model.config,
                "weights": str(model.weights) if model.weights else None,
                "weights_sha256": model.weights_sha256,
                "settings": {key: value for key, value in self.settings().items() if key in OUTPUT_SETTINGS},
                "vessel_model": self.vessel_segmenter.describe() if self.vessel_segmenter else None}


def segmenter_of(model: Optional[str] = None, weights=None, vessel_model: Optional[str] = None, vessel_weights=None,
                 notify: Callable[[str], None] = print, **settings) -> Segmenter:
    """A Segmenter of models named as on the command line (the default model when none), with SegmentConfig's
    settings: what `retinaseg run` and `eval` segment with, and the web app."""
    from retinaseg.models import DEFAULT_MODEL, load_model

    gate = load_model(vessel_model, vessel_weights) if vessel_model else None
    return Segmenter(load_model(model or DEFAULT_MODEL, weights), SegmentConfig(**settings), notify=notify,
                     vessel_model=gate)


# The settings that change what is written (device and batch size change it only at float rounding)
OUTPUT_SETTINGS = ("tile_size", "overlap", "whole_image_pixels", "resize", "max_downscale", "raw_fov_diameter",
                   "views", "av_graph", "av_decoding", "disc_grown_to", "disc_among_rivals", "jpeg_decoding")
