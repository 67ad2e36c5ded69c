"""Metric values on small hand-made cases."""
import math

import numpy as np
import pytest

from retinaseg import av
from retinaseg.evaluation.metrics import auc_scores, av_metrics, binary_metrics, scores_from_confusion, summarize


def test_confusion_metrics_on_a_hand_made_case():
    truth = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    m = binary_metrics(truth, pred=pred)
    # tp=2, fp=1, fn=1, tn=4
    assert m["se"] == pytest.approx(2 / 3) and m["sp"] == pytest.approx(4 / 5)
    assert m["acc"] == pytest.approx(6 / 8) and m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["iou"] == pytest.approx(2 / 4)
    assert m["mcc"] == pytest.approx((2 * 4 - 1 * 1) / math.sqrt(3 * 3 * 5 * 5))
    assert m["mse"] == pytest.approx(2 / 8)
    assert "auc_roc" not in m


def test_mask_restricts_scoring_to_the_fov():
    truth = np.array([1, 0, 0, 1], bool)
    pred = np.array([1, 1, 0, 0], bool)
    mask = np.array([True, False, True, False])
    m = binary_metrics(truth, pred=pred, mask=mask)
    assert m["acc"] == 1.0 and m["f1"] == 1.0


def test_probabilities_are_thresholded_at_one_half():
    truth = np.array([1, 1, 0, 0], bool)
    prob = np.array([0.5, 0.49, 0.51, 0.1], np.float32)
    m = binary_metrics(truth, prob=prob)
    assert m["se"] == 0.5 and m["sp"] == 0.5
    assert m["mse"] == pytest.approx(np.mean((prob - truth) ** 2))


def test_auc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + truth * 0.3, 1)  # many ties
    pos, neg = scores[truth], scores[~truth]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    auc_roc, auc_pr = auc_scores(scores, truth)
    assert auc_roc == pytest.approx(pairwise, abs=1e-12)
    # average precision by its definition: sum over distinct thresholds of recall gain * precision
    order_values = np.unique(scores)[::-1]
    ap, previous_recall = 0.0, 0.0
    for t in order_values:
        chosen = scores >= t
        recall = (chosen & truth).sum() / truth.sum()
        ap += (recall - previous_recall) * (chosen & truth).sum() / chosen.sum()
        previous_recall = recall
    assert auc_pr == pytest.approx(ap, abs=1e-12)


def test_auc_extremes():
    truth = np.array([0, 0, 1, 1], bool)
    assert auc_scores(np.array([0.1, 0.2, 0.8, 0.9]), truth) == (1.0, 1.0)
    assert auc_scores(np.array([0.9, 0.8, 0.2, 0.1]), truth)[0] == 0.0
    assert auc_scores(np.full(4, 0.5), truth)[0] == 0.5
    assert all(math.isnan(v) for v in auc_scores(np.ones(3), np.ones(3, bool)))


def test_av_metrics_weight_classes_by_ground_truth_counts():
    truth = np.array([[1, 1, 1, 2], [2, 0, 0, 3]], np.uint8)
    labels = np.array([[1, 1, 2, 2], [2, 0, 1, 0]], np.uint8)
    m = av_metrics(truth, labels)
    a = scores_from_confusion(tp=2, fp=1, fn=1, tn=4)
    v = scores_from_confusion(tp=2, fp=1, fn=0, tn=5)
    u = scores_from_confusion(tp=0, fp=0, fn=1, tn=7)
    assert m["artery_f1"] == pytest.approx(a["f1"]) and m["vein_f1"] == pytest.approx(v["f1"])
    assert m["weighted_f1"] == pytest.approx((3 * a["f1"] + 2 * v["f1"] + 1 * u["f1"]) / 6)
    assert m["weighted_se"] == pytest.approx((3 * a["se"] + 2 * v["se"] + 1 * u["se"]) / 6)
    # A/V accuracy: true A/V pixels predicted as vessel: (0,0) A->A, (0,1) A->A, (0,2) A->V, (0,3) V->V, (1,0) V->V
    assert m["av_accuracy"] == pytest.approx(4 / 5)
    assert m["vessel_f1"] == pytest.approx(scores_from_confusion(tp=5, fp=1, fn=1, tn=1)["f1"])


def test_av_accuracy_uses_artery_versus_vein_probability():
    truth = np.array([[1, 2]], np.uint8)
    probs = np.zeros((4, 1, 2), np.float32)
    probs[:, 0, 0] = [0.1, 0.3, 0.2, 0.4]  # arg-max uncertain, but artery beats vein: correct
    probs[:, 0, 1] = [0.1, 0.5, 0.4, 0.0]  # arg-max artery, truth vein: wrong
    m = av_metrics(truth, probs.argmax(0), probs)
    assert m["av_accuracy"] == 0.5


def test_summary_is_mean_and_std_ignoring_nan():
    s = summarize([{"id": "a", "f1": 0.5}, {"id": "b", "f1": 0.7}, {"id": "c", "f1": float("nan")}])
    assert s["f1"][0] == pytest.approx(0.6) and s["f1"][1] == pytest.approx(0.1)
    assert "id" not in s


def test_colour_map_round_trip():
    codes = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    assert np.array_equal(av.decode_colours(av.encode_colours(codes)), codes)
    assert np.array_equal(av.decode_label(codes), codes)
    purple_white = np.array([[[255, 0, 255], [255, 255, 255]]], np.uint8)
    assert av.decode_colours(purple_white).tolist() == [[av.UNCERTAIN, av.UNCERTAIN]]


def test_the_class_map_is_the_arg_max_over_classes_first_of_ties():
    prob = np.random.default_rng(0).random((4, 37, 53)).astype(np.float32)
    prob[:, 0, :4] = [[0.5, 0.1, 0.2, 0.3], [0.5, 0.5, 0.2, 0.3], [0.0, 0.5, 0.6, 0.3], [0.0, 0.2, 0.6, 0.3]]
    codes = av.class_map(prob, vessel_first=False)
    assert codes.dtype == np.uint8 and np.array_equal(codes, prob.argmax(axis=0))
    assert codes[0, :4].tolist() == [0, 1, 2, 0]


def test_a_class_map_decided_vessel_first_keeps_vessels_whose_type_is_unsure():
    # background, artery, vein, uncertain: vessel 0.6 split between types; sure background; a tie at 0.5
    prob = np.array([[0.4, 0.3, 0.3, 0.0], [0.7, 0.2, 0.05, 0.05], [0.5, 0.1, 0.3, 0.1], [0.2, 0.1, 0.1, 0.6]],
                    np.float32).T[:, None, :]
    assert av.class_map(prob, vessel_first=False).tolist() == [[0, 0, 0, 3]]
    assert av.class_map(prob, vessel_first=True).tolist() == [[av.ARTERY, 0, av.VEIN, av.UNCERTAIN]]


def test_vessel_gate_takes_the_vessel_split_and_keeps_the_class_shares():
    prob = np.array([[0.7, 0.1], [0.2, 0.6], [0.06, 0.2], [0.04, 0.1]], dtype=np.float32)[:, None, :]  # 4x1x2
    vessel = np.array([[0.8, 0.1]], dtype=np.float32)
    gated = av.gate_with_vessels(prob, vessel)
    assert np.allclose(gated.sum(0), 1) and np.allclose(gated[av.BACKGROUND], 1 - vessel)
    assert np.allclose(gated[1:, 0, 0], 0.8 * np.array([0.2, 0.06, 0.04]) / 0.3)  # shares of 0.3, times 0.8
    assert gated.argmax(0).tolist() == [[av.ARTERY, av.BACKGROUND]]  # the A/V model's background pixel is
    # now an artery (the binary model sees a vessel), and its artery pixel background (the binary model does not)
    nameless = av.gate_with_vessels(np.array([1, 0, 0, 0], dtype=np.float32)[:, None, None], np.ones((1, 1)))
    assert nameless.ravel().tolist() == pytest.approx([0, 0, 0, 1])  # a vessel the A/V model cannot name
