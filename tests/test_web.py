"""`retinaseg serve` (issue 35): the handlers as plain functions, then a real server started by the test, through its
HTTP API (gradio_client) and in Debian's chromium driven by Playwright."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from retinaseg import av
from retinaseg.errors import RetinasegError
from retinaseg.synthetic import synthetic_fundus

pytest.importorskip("gradio", reason="the [web] extra is not installed (make test installs it)")

from retinaseg.web.handlers import Choice, Models, probability_picture, segment_photos  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RUN_FILES = ("raw_pre", "small_pre", "prob", "overlay")  # what `retinaseg run --overlay --save-prob` writes per photo


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    iio.imwrite(folder / "eye.png", synthetic_fundus((380, 400), seed=4).image_uint8())
    iio.imwrite(folder / "other.jpg", synthetic_fundus((150, 160), seed=5).image_uint8())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


@pytest.fixture(scope="module")
def cli_run(photos, tmp_path_factory):
    """What `retinaseg run --overlay --save-prob` writes for the good photos: the reference."""
    out = tmp_path_factory.mktemp("cli") / "out"
    good = tmp_path_factory.mktemp("good")
    for name in ("eye.png", "other.jpg"):
        shutil.copy(photos / name, good / name)
    done = subprocess.run([sys.executable, "-m", "retinaseg", "run", "-q", "--overlay", "--save-prob", good, out],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def run_files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.parts[len(folder.parts)] in RUN_FILES}


def test_the_handler_writes_what_the_runner_writes_and_says_what_the_cli_says(photos, cli_run, tmp_path):
    models = Models("cpu")
    result = segment_photos([photos / "eye.png", photos / "other.jpg", photos / "broken.png"],
                            Choice("vesselnet", measure=True), models, tmp_path)
    assert result.summary.startswith("2 ok, 0 skipped, 1 failed")
    failed = [line for line in result.lines if line.startswith("failed:")]
    assert len(failed) == 1 and failed[0].startswith("failed: broken.png: ") and str(tmp_path) not in failed[0]
    assert [(name, status) for name, status, _, _ in result.statuses] == [
        ("broken.png", "failed"), ("eye.png", "ok"), ("other.jpg", "ok")]
    assert run_files(result.folder) == run_files(cli_run)  # same names, same bytes
    names = set(zipfile.ZipFile(result.archive).namelist())
    assert names == {p.relative_to(result.folder).as_posix() for p in result.folder.rglob("*") if p.is_file()}
    assert {"run.json", "measurements.csv", "raw_pre/eye.png", "measure_overlay/eye.png"} <= names
    assert [row["stem"] for row in result.measurements] == ["eye", "other"]
    view = result.photos[0]
    assert view.overlay == result.folder / "overlay" / "eye.png" and iio.imread(view.photo).dtype == np.uint8
    assert 0 < view.vessel_fraction < 1 and view.zones == result.folder / "measure_overlay" / "eye.png"
    # a second request with the same choice reuses the loaded model
    segmenter = models.segmenter(Choice("vesselnet", measure=True), [])
    segment_photos([photos / "eye.png"], Choice("vesselnet"), models, tmp_path)
    assert models.segmenter(Choice("vesselnet"), []) is segmenter


def test_a_16_bit_tiff_is_shown_as_an_8_bit_png_a_browser_displays(tmp_path):
    import tifffile

    photo = synthetic_fundus((150, 160), seed=6).image_uint8().astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "scan.tif", photo)
    result = segment_photos([tmp_path / "scan.tif"], Choice("vesselnet"), Models("cpu"), tmp_path / "work")
    shown = iio.imread(result.photos[0].photo)
    assert result.photos[0].photo.suffix == ".png" and shown.dtype == np.uint8 and shown.shape == (150, 160, 3)
    assert np.abs(shown.astype(int) - photo // 257).max() <= 1


def test_uploads_of_one_stem_are_all_segmented(photos, tmp_path):
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(photos / "other.jpg", twin / "eye.jpg")
    result = segment_photos([photos / "eye.png", twin / "eye.jpg", photos / "eye.png"], Choice("vesselnet"),
                            Models("cpu"), tmp_path / "work")
    assert result.summary.startswith("3 ok, 0 skipped, 0 failed"), result.lines
    assert sorted(p.name for p in (result.folder / "raw_pre").iterdir()) == ["eye-2.png", "eye-3.png", "eye.png"]


def test_the_handler_refuses_what_the_cli_refuses(photos, tmp_path):
    models = Models("cpu")
    for choice, said in ((Choice("no-such-model"), "cannot run here; choose one of"),
                         (Choice("vesselnet", av_graph=True), "for artery/vein models"),
                         (Choice("vesselnet", vessel_model="unet"), "goes with an artery/vein model")):
        with pytest.raises(RetinasegError, match=said):
            segment_photos([photos / "eye.png"], choice, models, tmp_path)
    with pytest.raises(RetinasegError, match="no photos"):
        segment_photos([], Choice("vesselnet"), models, tmp_path)


def test_the_probability_picture_is_grey_for_vessels_and_coloured_for_arteries_and_veins():
    vessel = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert probability_picture(vessel).tolist() == [[0, 128, 255]]
    classes = np.zeros((4, 1, 2), np.float32)
    classes[av.ARTERY, 0, 0], classes[av.VEIN, 0, 1] = 1.0, 0.5
    assert probability_picture(classes).tolist() == [[[255, 0, 0], [0, 0, 128]]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`retinaseg serve` in its own process, as a user starts it, with a 1 MB upload limit."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "retinaseg", "serve", "--port", str(port), "--device", "cpu",
                                    "--max-upload-mb", "1"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"retinaseg serve did not start: {log.read_text()}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_the_http_api_segments_queues_and_limits_uploads(server, photos, cli_run, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path))
    arguments = ("vesselnet", None, False, False, False)
    jobs = [client.submit([handle_file(str(photos / name))], *arguments, api_name="/segment")
            for name in ("eye.png", "other.jpg")]  # at once: the queue takes them in turn
    for job, name in zip(jobs, ("eye", "other")):
        summary, shown, photo, overlay, probability, compare, zones, table, archive = job.result(timeout=120)
        assert zones is None  # not measured
        assert summary.startswith("**1 ok, 0 skipped, 0 failed")
        assert Path(overlay).read_bytes() == (cli_run / "overlay" / f"{name}.png").read_bytes()
        assert Path(compare[1]).read_bytes() == Path(overlay).read_bytes()
        assert f"raw_pre/{name}.png" in zipfile.ZipFile(archive).namelist()
    summary, *_ = client.predict([handle_file(str(photos / "broken.png"))], *arguments, api_name="/segment")
    assert "0 ok, 0 skipped, 1 failed" in summary and "failed: broken.png: " in summary
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(1_200_000))
    with pytest.raises(Exception, match="(?i)exceeds the maximum|too large"):
        client.predict([handle_file(str(big))], *arguments, api_name="/segment")


def test_a_second_server_on_a_port_in_use_says_so_in_one_line(server):
    port = server.rstrip("/").rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "retinaseg", "serve", "--port", port], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; "
                                                f"choose another --port or --host"]


def _chromium():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    playwright = pytest.importorskip("playwright.sync_api", reason="the [browser] extra is not installed")
    return playwright


def test_in_a_real_browser_a_photo_goes_in_and_the_runners_overlay_and_zip_come_out(server, photos, cli_run,
                                                                                    tmp_path):
    sync_playwright = _chromium().sync_playwright
    outside = []
    with sync_playwright() as playwright:
        # Chromium's own background calls off: this machine, like a clinic's, may have no internet
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
                (server, "data:", "blob:")) else None)
            page.goto(server)
            page.wait_for_selector("#segment", timeout=60_000)  # the app has rendered, so its inputs listen
            page.locator("#photos input[type=file]").set_input_files(str(photos / "eye.png"))
            page.locator("#photos").get_by_text("eye.png").wait_for(timeout=60_000)  # uploaded to the server
            page.click("#segment")
            page.wait_for_selector("#overlay img", timeout=90_000)
            shown = page.request.get(page.locator("#overlay img").get_attribute("src")).body()
            assert shown == (cli_run / "overlay" / "eye.png").read_bytes()
            assert "1 ok, 0 skipped, 0 failed" in page.locator("#summary").inner_text()
            with page.expect_download() as download:
                page.locator("#archive a").first.click()
            download.value.save_as(tmp_path / "download.zip")
            page.screenshot(path=tmp_path / "retinaseg-serve.png", full_page=True)
            page.get_by_role("tab", name="Compare and zoom").click()  # the pair, on one zoomable canvas
            page.wait_for_selector("#compare img", timeout=30_000)
            page.screenshot(path=tmp_path / "compare.png")
            page.get_by_text("Measure (optic disc").click()  # again, measured: the zones get their own tab
            page.click("#segment")
            page.get_by_role("tab", name="Measured zones").click()
            page.wait_for_selector("#zones img", timeout=90_000)
            zones = page.request.get(page.locator("#zones img").get_attribute("src")).body()
        finally:
            browser.close()
    names = zipfile.ZipFile(tmp_path / "download.zip").namelist()
    assert sorted(names) == ["overlay/eye.png", "prob/eye.tif", "raw_pre/eye.png", "run.json", "small_pre/eye.png"]
    assert outside == []  # no fonts, scripts or analytics from anywhere else
    assert (tmp_path / "retinaseg-serve.png").stat().st_size > 10_000
    assert iio.imread(zones).shape[:2] == iio.imread(photos / "eye.png").shape[:2]  # the measure overlay, photo-sized
    if os.environ.get("RETINASEG_SCREENSHOT"):  # how docs/images/serve.png is made
        shutil.copy(tmp_path / "retinaseg-serve.png", os.environ["RETINASEG_SCREENSHOT"])
