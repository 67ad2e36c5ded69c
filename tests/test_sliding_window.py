"""Window math with trivial predictors over tables of shapes."""
import pytest
import torch
import torch.nn.functional as F

from retinaseg.inference.sliding_window import (SlidingWindow, gaussian_weights, predict_stream,
                                                sliding_window_inference, tile_starts)

SHAPES = [(1, 1), (17, 31), (64, 64), (65, 63), (100, 37), (129, 257), (300, 97)]


def pointwise(batch):
    return torch.sigmoid(2 * batch[:, :1]) * 0.5 + 0.25 * torch.tanh(batch[:, 1:2])


class Blur(torch.nn.Module):
    """Translation-equivariant: a fixed 5x5 mean filter."""

    def forward(self, batch):
        return F.avg_pool2d(batch[:, :1], 5, stride=1, padding=2, count_include_pad=True)


@pytest.mark.parametrize("length,tile,overlap", [(10, 16, 0.25), (16, 16, 0.5), (17, 16, 0.25), (100, 32, 0.25),
                                                 (257, 64, 0.5), (1000, 128, 0.0), (129, 32, 0.9)])
def test_tiles_cover_the_axis_with_at_least_the_requested_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts == sorted(starts)
    assert starts[-1] + tile >= length and (length <= tile or starts[-1] + tile == length)
    stride = max(1, int(tile * (1 - overlap)))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("height,width", SHAPES)
@pytest.mark.parametrize("tile,overlap", [(16, 0.25), (32, 0.5), (64, 0.0)])
def test_pointwise_predictor_is_exact_tiled_or_whole(height, width, tile, overlap):
    image = torch.randn(2, height, width)
    tiled = SlidingWindow(tile_size=tile, overlap=overlap, size_divisor=16, whole_image_pixels=0)
    whole = SlidingWindow(tile_size=tile, overlap=overlap, size_divisor=16)
    a = sliding_window_inference(image, pointwise, tiled, batch_size=3)
    b = sliding_window_inference(image, pointwise, whole)
    assert a.shape == b.shape == (1, height, width)
    assert torch.allclose(a, pointwise(image[None])[0], atol=1e-6)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("pixels", [0, 1280 * 1280])  # tiled, whole
def test_a_channels_last_canvas_gives_the_same_map_and_the_network_its_layout_without_a_copy(pixels):
    image = torch.randn(3, 97, 161)
    seen = []

    def blur(batch):
        seen.append(batch.is_contiguous(memory_format=torch.channels_last))
        return Blur()(batch)

    first = sliding_window_inference(image, blur, SlidingWindow(64, 0.5, size_divisor=16, whole_image_pixels=pixels))
    last = sliding_window_inference(image, blur, SlidingWindow(64, 0.5, size_divisor=16, whole_image_pixels=pixels,
                                                               channels_last=True))
    assert torch.equal(first, last)  # the same zeros and values, padded in one copy
    if pixels:  # the whole image in one pass: the padded frame itself, already laid out as the network takes it
        assert seen == [False, True]


def test_an_image_framed_where_it_was_prepared_gives_the_same_map_and_a_frame_of_another_size_is_refused():
    from retinaseg.inference.sliding_window import Framed

    image, config = torch.randn(3, 97, 161), SlidingWindow(64, 0.5, size_divisor=16, channels_last=True)
    framed = config.frame(image)
    assert framed.frame.shape == (3, 112, 176) and (framed.height, framed.width) == (97, 161)
    alike = sliding_window_inference(framed, Blur(), config), sliding_window_inference(image, Blur(), config)
    assert torch.equal(*alike)
    with pytest.raises(ValueError, match="framed image"):
        sliding_window_inference(Framed(framed.frame[:, :96], 97, 161), Blur(), config)


@pytest.mark.parametrize("height,width", [(120, 90), (97, 161), (200, 200)])
def test_translation_equivariant_model_gives_the_same_map_tiled_and_whole(height, width):
    image = torch.randn(1, height, width)
    model = Blur()
    tiled = sliding_window_inference(image, model, SlidingWindow(64, 0.5, size_divisor=8, whole_image_pixels=0))
    whole = sliding_window_inference(image, model, SlidingWindow(64, 0.5, size_divisor=8))
    assert tiled.shape == whole.shape == (1, height, width)
    reference = model(image[None])[0]
    assert torch.allclose(whole[:, :-4, :-4], reference[:, :-4, :-4], atol=1e-5)  # away from the padding
    # tile edges see zero padding; Gaussian blending keeps the difference small, and exact where tiles agree
    assert (tiled - whole).abs().mean() < 0.01
    assert (tiled - whole).abs().max() < 0.05


def test_tiles_from_several_images_share_batches_and_come_back_in_order():
    images = [(k, torch.randn(1, h, w)) for k, (h, w) in enumerate([(40, 70), (33, 33), (90, 20), (64, 64)])]
    calls = []

    def predictor(batch):
        calls.append(len(batch))
        return batch.clone()

    config = SlidingWindow(tile_size=32, overlap=0.25, size_divisor=8, whole_image_pixels=0)
    results = list(predict_stream(iter(images), predictor, config, batch_size=5))
    assert [k for k, _ in results] == [0, 1, 2, 3]
    for (_, image), (_, out) in zip(images, results):
        assert torch.allclose(out, image, atol=1e-6)
    assert max(calls) == 5 and sum(calls) > 5  # full batches mixing images


def test_whole_image_pass_pads_to_the_divisor_and_crops_back():
    seen = []

    def predictor(batch):
        seen.append(tuple(batch.shape[-2:]))
        return batch[:, :1]

    out = sliding_window_inference(torch.ones(3, 50, 70), predictor, SlidingWindow(size_divisor=32))
    assert seen == [(64, 96)] and out.shape == (1, 50, 70)


@pytest.mark.parametrize("kwargs,message", [
    ({"overlap": 1.0}, "overlap"), ({"overlap": -0.1}, "overlap"), ({"tile_size": 100, "size_divisor": 32}, "multiple"),
    ({"tile_size": 0}, "multiple"), ({"size_divisor": 0}, "divisor"), ({"sigma_scale": 0}, "sigma")])
def test_configuration_is_checked_up_front(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SlidingWindow(**kwargs)


def test_gaussian_weights_peak_in_the_centre_and_never_vanish():
    w = gaussian_weights(32, 48, 0.125)
    assert w.shape == (32, 48) and w.min() > 0 and w.max() == 1
    assert w[16, 24] > w[0, 0]
