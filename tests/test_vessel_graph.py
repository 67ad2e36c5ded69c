"""The vessel graph on hand-made maps of known vessels: counts, lengths, calibres, crossings, one type per vessel."""
import json

import numpy as np
import pytest

from retinaseg import av
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.synthetic import DrawnVessel, draw_vessels
from retinaseg import vessel_graph
from retinaseg.vessel_graph import GRAPH_FORMAT, build_graph, consistent_av, graph_of


def mask_of(*vessels, shape=(200, 200)):
    labels, coverage = draw_vessels(shape, list(vessels))
    return labels > 0, labels, coverage


def kinds(graph):
    return sorted(node.kind for node in graph.nodes)


def test_a_tree_has_its_nodes_and_segments():
    trunk = DrawnVessel([(100, 10), (100, 100)], 7)
    upper = DrawnVessel([(100, 100), (30, 170)], 5)
    lower = DrawnVessel([(100, 100), (170, 170)], 5)
    graph = build_graph(mask_of(trunk, upper, lower)[0])
    assert kinds(graph) == ["bifurcation", "end", "end", "end"] and len(graph.segments) == 3
    assert len(graph.vessels()) == 3  # a bifurcation does not join vessels


def test_bumps_on_a_wide_vessels_edge_are_no_branches(monkeypatch):
    from skimage.draw import disk

    mask = mask_of(DrawnVessel([(60, 10), (60, 230)], 20), DrawnVessel([(70, 150), (110, 150)], 4),
                   shape=(120, 240))[0]  # a wide vessel, and a thin branch leaving it for 30 px
    smooth = mask.copy()
    for centre in ((48, 60), (48, 120), (48, 180), (72, 90)):  # bumps of its edge, 5-6 px high
        mask[disk(centre, 6, shape=mask.shape)] = True
    monkeypatch.setattr(vessel_graph, "SPUR_WIDTHS", None)
    assert len(build_graph(mask).segments) > 3  # the skeleton's spurs, one per bump
    monkeypatch.setattr(vessel_graph, "SPUR_WIDTHS", 1.0)
    graph = build_graph(mask)
    assert kinds(graph) == ["bifurcation", "end", "end", "end"] and len(graph.segments) == 3

    def in_wide_vessel(segment):
        return segment.path[:, 0].max() < 80  # the branch runs down to row 110

    left, right, branch = sorted(graph.segments, key=lambda s: (not in_wide_vessel(s), s.path[:, 1].min()))
    without_bumps = sum(s.length for s in build_graph(smooth).segments if in_wide_vessel(s))
    assert left.length + right.length == pytest.approx(without_bumps, abs=3)  # as long as without its bumps
    assert abs(np.median(left.calibres) - 20) <= 1.0 and abs(np.median(right.calibres) - 20) <= 1.0
    assert abs(branch.calibre - 4) <= 1.0


def test_a_trunk_runs_on_past_a_side_branch_but_a_fork_joins_nothing(monkeypatch):
    trunk = DrawnVessel([(100, 10), (100, 190)], 12)
    side = DrawnVessel([(100, 100), (30, 140)], 3)  # a quarter of the trunk's width
    fork = [DrawnVessel([(100, 10), (100, 100)], 8), DrawnVessel([(100, 100), (40, 180)], 6),
            DrawnVessel([(100, 100), (160, 180)], 6)]
    monkeypatch.setattr(vessel_graph, "SIDE_BRANCH_SHARE", None)
    assert len(build_graph(mask_of(trunk, side)[0]).vessels()) == 3
    monkeypatch.setattr(vessel_graph, "SIDE_BRANCH_SHARE", 0.5)
    graph = build_graph(mask_of(trunk, side)[0])
    assert kinds(graph) == ["bifurcation", "end", "end", "end"]
    (branch,), halves = sorted(graph.vessels(), key=len)  # the side branch, and the trunk's two halves as one
    assert graph.segments[branch].calibre < 5 and all(graph.segments[i].calibre > 10 for i in halves)
    assert len(build_graph(mask_of(*fork)[0]).vessels()) == 3


def test_a_straight_vessel_has_its_length_and_chord():
    graph = build_graph(mask_of(DrawnVessel([(100, 20), (100, 180)], 5))[0])
    (segment,) = graph.segments
    assert abs(segment.length - 160) <= 5 + 1  # the skeleton stops about half a width short of each end
    assert segment.chord == pytest.approx(segment.length, abs=0.01)


@pytest.mark.parametrize("width", [2.0, 3.0, 4.5, 6.0, 9.0])
@pytest.mark.parametrize("end", [(100, 180), (180, 180), (150, 185)], ids=["horizontal", "diagonal", "oblique"])
def test_calibres_are_the_drawn_widths(width, end):
    mask, _, coverage = mask_of(DrawnVessel([(100, 20), end], width) if end == (100, 180)
                                else DrawnVessel([(20, 20), end], width))
    (segment,) = build_graph(mask, coverage).segments  # measured on the probability-like coverage, as run does
    assert abs(segment.calibre - width) <= 0.5, (width, segment.calibre)
    (segment,) = build_graph(mask).segments  # on the mask alone: a width rasterised to whole pixels
    assert abs(segment.calibre - width) <= 1.0, (width, segment.calibre)


def test_a_crossing_is_paired_straight_through():
    artery = DrawnVessel([(20, 30), (180, 170)], 5, av.ARTERY)  # steep, from top left
    vein = DrawnVessel([(90, 10), (110, 190)], 7, av.VEIN)  # nearly flat
    graph = build_graph(mask_of(artery, vein)[0])
    assert kinds(graph).count("crossing") == 1 and len(graph.segments) == 4
    assert len(graph.through) == 2 and len(graph.vessels()) == 2
    for vessel in graph.vessels():  # each vessel's two segments go on in one direction, with one calibre
        first, second = (graph.segments[i] for i in vessel)
        assert abs(first.calibre - second.calibre) < 1.0
        ends = np.concatenate([first.path[[0, -1]], second.path[[0, -1]]]).astype(float)
        spread = np.linalg.svd(ends - ends.mean(axis=0), compute_uv=False)
        assert spread[1] < 0.1 * spread[0]  # the four end points lie on a line


def _av_probabilities(labels, coverage, flipped=None):
    """4xHxW probabilities that say each drawn vessel's own type, 0.9 to 0.1, except inside `flipped`."""
    prob = np.zeros((4,) + labels.shape, np.float32)
    vessel = np.clip(coverage, 0, 1)
    prob[av.BACKGROUND] = 1 - vessel
    artery = np.where(labels == av.ARTERY, 0.9, 0.1)
    if flipped is not None:
        artery = np.where(flipped, 1 - artery, artery)
    prob[av.ARTERY], prob[av.VEIN] = vessel * artery, vessel * (1 - artery)
    return prob


def test_a_vessel_with_a_flipped_stretch_is_relabelled_whole():
    labels, coverage = draw_vessels((200, 200), [DrawnVessel([(100, 10), (100, 190)], 6, av.ARTERY),
                                                 DrawnVessel([(20, 60), (180, 60)], 6, av.VEIN)])
    flipped = np.zeros(labels.shape, bool)
    flipped[:, 125:145] = True  # a stretch of the artery reads as vein
    prob = _av_probabilities(labels, coverage, flipped)
    before = prob.argmax(axis=0)
    assert (before[100, 125:145] == av.VEIN).all()
    after, graph = consistent_av(prob)
    labelled = after.argmax(axis=0)
    outside_the_crossing = np.r_[20:52, 68:185]
    assert (labelled[100, outside_the_crossing] == av.ARTERY).all()
    assert (labelled[np.r_[25:92, 108:175], 60] == av.VEIN).all()
    assert np.array_equal(labelled > 0, before > 0)  # the vessel map is untouched


@pytest.mark.parametrize("case", ["empty", "all vessel", "single pixel", "tiny blob"])
def test_degenerate_maps_give_a_graph_without_error(case):
    mask = np.zeros((40, 50), bool)
    if case == "all vessel":
        mask[:] = True
    elif case == "single pixel":
        mask[20, 20] = True
    elif case == "tiny blob":
        mask[20:22, 20:22] = True
    graph = build_graph(mask)
    assert json.loads(json.dumps(graph.to_json()))["format"] == GRAPH_FORMAT
    prob = np.stack([~mask, mask, np.zeros_like(mask), np.zeros_like(mask)]).astype(np.float32)
    after, _ = consistent_av(prob)
    assert np.array_equal(after.argmax(axis=0) > 0, mask)


def test_the_graph_json_has_the_documented_fields_at_raw_scale():
    labels, coverage = draw_vessels((200, 200), [DrawnVessel([(100, 10), (100, 190)], 6, av.ARTERY)])
    graph, chosen = graph_of(_av_probabilities(labels, coverage))
    data = graph.to_json(scale_to_raw=2.0)
    assert data["size"] == [400, 400] and data["segments"][0]["label"] == "artery"
    segment = data["segments"][0]
    assert set(segment) == {"id", "start", "end", "vessel", "label", "length", "chord", "calibre", "calibres",
                            "path"}
    assert abs(segment["calibre"] - 12) <= 1 and {node["kind"] for node in data["nodes"]} == {"end"}


def test_run_writes_the_graph_and_refuses_av_graph_for_a_binary_model(cli, tmp_path, photo_folder, fake_models):
    out = tmp_path / "out"
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "halves-av", "--av-graph", "--save-graph",
                                        str(photo_folder), str(out)])
    assert result.exit_code == 0, result.output
    graph = json.loads((out / "graph" / "a.json").read_text())
    assert graph["format"] == GRAPH_FORMAT and graph["size"] == [192, 192] and graph["segments"]
    assert json.loads((out / "run.json").read_text())["made_with"]["settings"]["av_graph"] is True
    result = cli.invoke(retinaseg_cli, ["run", "-q", "-m", "dark-vessels", "--av-graph", str(photo_folder),
                                        str(tmp_path / "binary")])
    assert result.exit_code == 1 and "binary vessel model" in result.output
