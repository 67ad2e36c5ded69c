"""The Gradio page of `retinaseg serve`, and its HTTP API (`/segment`): every action calls handlers.py, which runs
the batch runner. Nothing is fetched from outside the machine: Gradio's own fonts and scripts, no analytics."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from retinaseg.errors import RetinasegError
from retinaseg.web.handlers import Choice, Models, Result, runnable_models, segment_photos

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr  # noqa: E402 (after the analytics switch)

NO_VESSEL_MODEL = "none (the A/V model's own vessels)"
KEPT_SECONDS = 3600  # a request's folder is removed after an hour
MEASURED_COLUMNS = ("stem", "status", "disc_diameter_px", "crae_px", "crve_px", "avr", "fractal_dimension_all",
                    "density_fov_all", "tortuosity_density_per_px_all", "reason", "disc_check")
TITLE = "retinaseg"


def build_app(models: Models, work_dir: Path) -> gr.Blocks:
    """The page: photos and options on the left; the runner's summary, the chosen photo beside its overlay, its
    probabilities, its measured zones, the measurements and the zip on the right."""
    tasks = runnable_models()
    vessel_models = [name for name, task in tasks.items() if task == "vessel"]
    default = "vesselnet" if "vesselnet" in tasks else next(iter(tasks))
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\nRetinal vessels and arteries/veins in colour fundus photos, by the same runner as "
                    "`retinaseg run`. The photos stay on this machine.")
        views = gr.State({})
        with gr.Row():
            with gr.Column(scale=1):
                photos = gr.File(label="Fundus photos", file_count="multiple", elem_id="photos")
                samples = gr.Button("Use the sample photos", size="sm")
                model = gr.Dropdown(list(tasks), value=default, label="Model",
                                    info="vessel models draw vessels; A/V models arteries, veins and uncertain")
                vessel_model = gr.Dropdown([NO_VESSEL_MODEL, *vessel_models], value=NO_VESSEL_MODEL,
                                           label="Vessel pixels from", interactive=False,
                                           info="A/V models: take which pixels are vessels from a vessel model")
                tta = gr.Checkbox(_model_tta(default), label="Test-time views (TTA)",
                                  info="average over the model's flipped and scaled views: slower, steadier")
                av_graph = gr.Checkbox(False, label="One type per vessel (A/V graph)", interactive=False)
                measure = gr.Checkbox(False, label="Measure (optic disc, CRAE, CRVE, AVR, tortuosity...)")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="summary")
                shown = gr.Dropdown([], label="Photo shown", interactive=True)
                with gr.Tab("Side by side"):
                    with gr.Row():  # at full resolution: the fullscreen button enlarges
                        photo = gr.Image(label="Photo", type="filepath", interactive=False, elem_id="photo",
                                         buttons=["fullscreen", "download"])
                        overlay = gr.Image(label="Map over the photo", type="filepath", interactive=False,
                                           elem_id="overlay", buttons=["fullscreen", "download"])
                        probability = gr.Image(label="Probabilities", type="filepath", interactive=False,
                                               elem_id="probability", buttons=["fullscreen", "download"])
                with gr.Tab("Compare and zoom"):
                    compare = gr.ImageSlider(label="Photo | map over it: drag the bar; scroll to zoom, drag to pan",
                                             type="filepath", interactive=False, elem_id="compare",
                                             buttons=["fullscreen"], max_height=800)
                with gr.Tab("Measured zones"):
                    zones = gr.Image(label="The disc, zones B and C, and the vessels CRAE and CRVE are made of (with "
                                     "Measure)", type="filepath", interactive=False, elem_id="zones",
                                     buttons=["fullscreen", "download"])
                table = gr.Dataframe(headers=list(MEASURED_COLUMNS), label="Measurements (all columns in the zip's "
                                     "measurements.csv)", type="array", interactive=False, visible=False)
                archive = gr.File(label="What `retinaseg run` writes, zipped", interactive=False, elem_id="archive")

        def chosen_model(name):
            av = tasks.get(name) == "av"
            return (gr.update(interactive=av, value=NO_VESSEL_MODEL), gr.update(value=_model_tta(name)),
                    gr.update(interactive=av, value=False))

        def segment(files, model_name, vessel, with_tta, with_graph, with_measure):
            choice = Choice(model_name, None if vessel in (None, NO_VESSEL_MODEL) else vessel, bool(with_tta),
                            bool(with_graph), bool(with_measure))
            _prune(work_dir)
            try:
                result = segment_photos([_path(f) for f in files or []], choice, models, work_dir)
            except RetinasegError as exc:
                raise gr.Error(str(exc)) from None
            pictures = {v.name: (str(v.photo), str(v.overlay), str(v.probability), v.zones and str(v.zones))
                        for v in result.photos}
            first = next(iter(pictures), None)
            rows = [[_cell(row.get(key)) for key in MEASURED_COLUMNS] for row in result.measurements]
            return (summary_markdown(result), gr.update(choices=list(pictures), value=first), *show(first, pictures),
                    gr.update(value=rows, visible=bool(result.measurements)), str(result.archive), pictures)

        def show(name, pictures):
            if name not in pictures:
                return None, None, None, None, None
            photo_file, overlay_file, probability_file, zones_file = pictures[name]
            return photo_file, overlay_file, probability_file, (photo_file, overlay_file), zones_file

        def sample_photos():
            from retinaseg.synthetic import write_samples

            folder = work_dir / "samples"
            return [str(p) for p in (sorted(folder.iterdir()) if folder.is_dir() else write_samples(folder))]

        model.change(chosen_model, model, [vessel_model, tta, av_graph], api_name=False)
        samples.click(sample_photos, None, photos, api_name=False)
        run.click(segment, [photos, model, vessel_model, tta, av_graph, measure],
                  [summary, shown, photo, overlay, probability, compare, zones, table, archive, views],
                  api_name="segment")
        shown.change(show, [shown, views], [photo, overlay, probability, compare, zones], api_name=False)
    return app


def summary_markdown(result: Result) -> str:
    """The runner's last line, a row per photo, and the runner's lines word for word."""
    rows = ["| photo | status | vessel share of the FOV | note |", "|---|---|---|---|"]
    for name, status, fraction, note in result.statuses:
        rows.append(f"| {_escaped(name)} | {status} | {'' if fraction is None else f'{fraction:.1%}'} | "
                    f"{_escaped(note)} |")
    lines = "\n".join(result.lines)
    said = f"\n\n```\n{lines}\n```" if lines else ""
    return f"**{_escaped(result.summary)}**\n\n" + "\n".join(rows) + said


def serve(host: str = "127.0.0.1", port: int = 7860, device: str = "auto", max_upload_mb: int = 50) -> None:
    """Starts the app and blocks; requests queue and run one at a time on models loaded once."""
    _check_free(host, port)
    with tempfile.TemporaryDirectory(prefix="retinaseg-serve-") as scratch:
        work_dir = Path(scratch)
        app = build_app(Models(device), work_dir)
        app.queue(default_concurrency_limit=1, max_size=100)
        print(f"retinaseg serve: http://{host}:{port}/ (Ctrl+C stops it)", flush=True)
        app.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb", ssr_mode=False,
                   allowed_paths=[str(work_dir)], footer_links=["api"], quiet=True, show_error=True)


def _check_free(host: str, port: int) -> None:
    """A port in use, or an address not of this machine, said in one line before Gradio starts."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise RetinasegError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port or "
                             f"--host") from None


def _model_tta(name: str) -> bool:
    from retinaseg.registry import get_model

    return bool(get_model(name).tta)


def _path(upload) -> str:
    return upload if isinstance(upload, str) else getattr(upload, "path", None) or upload["path"]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _escaped(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _prune(work_dir: Path, now: Optional[float] = None) -> None:
    """Requests' folders older than KEPT_SECONDS go: a long-running server does not fill the disk."""
    now = time.time() if now is None else now
    for folder in work_dir.iterdir():
        if folder.is_dir() and folder.name != "samples" and now - folder.stat().st_mtime > KEPT_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)
