"""The vessel graph: a vessel map as centre lines, nodes and segments, with calibres, and one artery/vein label per
vessel. The one place the rest of retinaseg turns pixels into vessels (`retinaseg run --save-graph` and
`--av-graph`, measurements, evaluation).

- The map's skeleton (scikit-image) is cut into segments between nodes by skan. Junction pixels that touch are
  one node; so are two junctions a vessel's width apart, which is how a crossing usually skeletonises.
- Each segment has its centre-line path, length (along the path), chord (end to end) and calibre profile: the
  vessel's width across the centre line at each of its pixels, measured on the probability map when there is
  one (sub-pixel), else on the mask.
- A node where four branches meet is a crossing: its branches are paired straight through (by angle, then
  calibre), so a vessel runs on through it. Segments joined through crossings and through two-branch nodes form
  a vessel.
- A/V consistency (label_vessels): each vessel gets the type its pixels' probabilities vote for; vessels whose
  vote is weak take the type of the vessels they branch from or into, which share a type at a bifurcation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from retinaseg import av

GRAPH_FORMAT = "retinaseg-vessel-graph/1"
DIRECTION_PIXELS = 10  # how far along a branch its direction at a node is taken
CALIBRE_SAMPLE_STEP = 0.25  # pixels between samples across a vessel
PROFILE_PIXELS = 5  # centre-line pixels whose profiles across the vessel are averaged for one photo calibre
MIN_DEPTH = 0.005  # a photo profile shallower than this (intensity 0-1) is not a vessel's
MIN_CONTRAST_NOISE = 3.0  # ... nor one shallower than this many times its background's noise
BACKGROUND_PERCENTILE = 90  # of the samples beside a vessel: its background level
CROSSING_GAP = 1.5  # two junctions this many vessel widths apart (or closer) are one crossing
# A branch with a free end no longer than this many widths of the vessel at its junction is a spur, a bump of that
# vessel's edge, and is dropped (a variant put to a rule, docs/experiments.md); None keeps spurs
SPUR_WIDTHS = None
# At a bifurcation whose narrowest branch is no wider than this share of the narrower other one, the other two are
# one vessel running on past a side branch (a variant put to a rule, docs/experiments.md); None joins nothing there
SIDE_BRANCH_SHARE = None
WEAK_VOTE = 0.2  # a vessel whose artery/vein vote margin is under this takes its neighbours' type
CLEAR_VOTE = 0.5  # consistent_av relabels only vessels voting at least this margin one way (3:1)


@dataclass
class Node:
    id: int
    row: float
    col: float
    kind: str = "end"  # end, pass (two branches), bifurcation, crossing, junction (five or more)
    degree: int = 0


@dataclass
class Segment:
    id: int
    start: int  # node ids
    end: int
    path: np.ndarray  # (n, 2) row, column of the centre-line pixels, from start to end
    length: float  # along the centre line, pixels
    chord: float  # straight from end to end, pixels
    calibres: np.ndarray  # the vessel's width at each centre-line pixel, pixels
    vessel: int = -1  # the vessel (segments joined through crossings) it belongs to
    label: int = 0  # artery, vein or uncertain (av codes); 0 on a binary map

    @property
    def calibre(self) -> float:
        return float(np.median(self.calibres)) if len(self.calibres) else 0.0


@dataclass
class VesselGraph:
    shape: tuple  # (height, width) of the map
    nodes: list = field(default_factory=list)
    segments: list = field(default_factory=list)
    through: list = field(default_factory=list)  # (segment id, segment id) continuing each other at a crossing
    vessel_margins: list = field(default_factory=list)  # per vessel: (artery - vein) / (artery + vein) vote
    owner: Optional[np.ndarray] = None  # label_vessels' segment id of each vessel pixel (-1 elsewhere)

    def vessels(self) -> list[list[int]]:
        """Segment ids of each vessel: segments joined through crossings and two-branch nodes."""
        groups: dict = {}
        for segment in self.segments:
            groups.setdefault(segment.vessel, []).append(segment.id)
        return [groups[key] for key in sorted(groups)]

    def to_json(self, scale_to_raw: float = 1.0) -> dict:
        """The documented, versioned form `--save-graph` writes (docs/running.md, "The vessel graph").
        scale_to_raw converts this map's pixels to the photo's own."""
        def pixels(value):
            return round(float(value) * scale_to_raw, 2)

        return {
            "format": GRAPH_FORMAT,
            "size": [int(self.shape[1] * scale_to_raw + 0.5), int(self.shape[0] * scale_to_raw + 0.5)],
            "nodes": [{"id": n.id, "x": pixels(n.col), "y": pixels(n.row), "kind": n.kind, "degree": n.degree}
                      for n in self.nodes],
            "segments": [{"id": s.id, "start": s.start, "end": s.end, "vessel": s.vessel,
                          "label": av.CLASS_NAMES[s.label] if s.label else None,
                          "length": pixels(s.length), "chord": pixels(s.chord), "calibre": pixels(s.calibre),
                          "calibres": [pixels(c) for c in s.calibres],
                          "path": [[pixels(col), pixels(row)] for row, col in s.path]} for s in self.segments],
            "crossings": [[a, b] for a, b in self.through],
        }


def build_graph(mask: np.ndarray, probability: Optional[np.ndarray] = None) -> VesselGraph:
    """The graph of a binary vessel mask (HxW bool). probability (HxW, vessel probability), when given, is what
    calibres are measured on."""
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, dtype=bool)
    graph = VesselGraph(mask.shape)
    skeleton = skeletonize(mask)
    if skeleton.sum() < 2:  # nothing, or a lone pixel: no segment to speak of
        return graph
    width_map = mask.astype(np.float32) if probability is None else np.asarray(probability, dtype=np.float32)
    skel, paths, ends = _skeleton_paths(skeleton)
    node_of, positions = _nodes(skel, skeleton.shape, ends)
    segments = []
    for path, (first, last) in zip(paths, ends):
        if node_of[first] != node_of[last] or len(path) > 3:  # not junction pixels linked to each other
            segments.append([node_of[first], node_of[last], path])
    distance = _distance(mask, skeleton)
    segments = _merge_crossing_junctions(_prune_spurs(segments, distance), positions, distance)
    for index, (start, end, path) in enumerate(segments):
        length = _path_length(path)
        chord = float(np.hypot(*(path[-1] - path[0])))
        graph.segments.append(Segment(index, start, end, path, length, chord, _calibres(path, width_map, distance)))
    used = sorted({s.start for s in graph.segments} | {s.end for s in graph.segments})
    renumber = {old: new for new, old in enumerate(used)}
    for segment in graph.segments:
        segment.start, segment.end = renumber[segment.start], renumber[segment.end]
    graph.nodes = [Node(renumber[old], *positions[old]) for old in used]
    for segment in graph.segments:  # a loop's two ends are both at its one node
        graph.nodes[segment.start].degree += 1
        graph.nodes[segment.end].degree += 1
    for node in graph.nodes:
        node.kind = {1: "end", 2: "pass", 3: "bifurcation", 4: "crossing"}.get(node.degree, "junction")
    _pair_crossings(graph)
    _group_vessels(graph)
    return graph


def _skeleton_paths(skeleton: np.ndarray) -> tuple:
    """skan's skeleton and its branches: each a (n, 2) path of pixel coordinates, and the pixel indices of its
    two ends."""
    import skan

    skel = skan.Skeleton(skeleton)
    coordinates = np.asarray(skel.coordinates).astype(np.int64)
    paths, ends = [], []
    for i in range(skel.n_paths):
        indices = np.asarray(skel.path(i))
        paths.append(coordinates[indices])
        ends.append((int(indices[0]), int(indices[-1])))
    return skel, paths, ends


def _nodes(skel, shape: tuple, ends: list) -> tuple[dict, dict]:
    """Pixel index -> node id for every branch end, with junction pixels that touch merged into one node; and
    node id -> (row, column) position."""
    from scipy import ndimage

    coordinates = np.asarray(skel.coordinates)
    end_pixels = sorted({pixel for pair in ends for pixel in pair})
    junction_image = np.zeros(shape, bool)
    junctions = [p for p in end_pixels if skel.degrees[p] >= 3]
    for p in junctions:
        junction_image[tuple(coordinates[p].astype(int))] = True
    clusters, _ = ndimage.label(junction_image, structure=np.ones((3, 3), bool))
    node_of, members = {}, {}
    next_id = 0
    cluster_node = {}
    for p in end_pixels:
        row, col = coordinates[p].astype(int)
        cluster = clusters[row, col]
        if cluster:
            if cluster not in cluster_node:
                cluster_node[cluster] = next_id
                next_id += 1
            node_of[p] = cluster_node[cluster]
        else:
            node_of[p] = next_id
            next_id += 1
        members.setdefault(node_of[p], []).append(coordinates[p])
    positions = {node: tuple(np.mean(points, axis=0)) for node, points in members.items()}
    return node_of, positions


def _distance(mask: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """Each centre-line pixel's distance to the background, outside the image included (0 elsewhere): what a
    Euclidean distance transform of the mask gives there. The nearest background pixel always touches a vessel
    pixel, so a nearest-neighbour query among those few is exact, and ten times faster than the transform on an
    HRF-size map."""
    from scipy import ndimage

    padded = np.pad(mask, 1)
    rim = ndimage.binary_dilation(padded, np.ones((3, 3), bool)) & ~padded
    distance = np.zeros(mask.shape)
    centre = np.argwhere(skeleton)
    distance[centre[:, 0], centre[:, 1]] = _nearest(np.argwhere(rim) - 1, centre)[0]
    return distance


def _nearest(points: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query pixel, the Euclidean distance to the nearest of points and that point's index."""
    from scipy.spatial import cKDTree

    return cKDTree(points).query(queries)


def _degrees(segments: list) -> dict:
    degree: dict = {}
    for start, end, _ in segments:
        degree[start] = degree.get(start, 0) + 1
        degree[end] = degree.get(end, 0) + 1
    return degree


def _path_length(path: np.ndarray) -> float:
    return float(np.hypot(*np.diff(path, axis=0).T).sum()) if len(path) > 1 else 0.0


def _prune_spurs(segments: list, distance: np.ndarray) -> list:
    """Drops spurs (SPUR_WIDTHS): branches from a junction to a free end no longer than SPUR_WIDTHS times the
    vessel's width at the junction, where at least two other branches stay; two that stay alone become one."""
    if SPUR_WIDTHS is None:
        return segments
    degree = _degrees(segments)
    spurs: dict = {}  # segment index -> its junction
    for index, (start, end, path) in enumerate(segments):
        for free, junction, at in ((start, end, path[-1]), (end, start, path[0])):
            if degree[free] == 1 and degree[junction] >= 3 \
                    and _path_length(path) <= SPUR_WIDTHS * 2 * float(distance[tuple(at)]):
                spurs[index] = junction
    dropped_at: dict = {}
    for junction in spurs.values():
        dropped_at[junction] = dropped_at.get(junction, 0) + 1
    cleared = {junction for junction, count in dropped_at.items() if degree[junction] - count >= 2}
    kept = [s for index, s in enumerate(segments) if spurs.get(index) not in cleared]
    for junction in cleared:
        branches = [s for s in kept if junction in (s[0], s[1])]
        if degree[junction] - dropped_at[junction] != 2 or len(branches) != 2:  # more stay, or a loop
            continue
        (a_start, a_end, a_path), (b_start, b_end, b_path) = branches
        into = a_path if a_end == junction else a_path[::-1]  # ends at the junction
        out = b_path if b_start == junction else b_path[::-1]  # starts there
        same_pixel = (into[-1] == out[0]).all()
        kept = [s for s in kept if s is not branches[0] and s is not branches[1]]
        kept.append([a_start if a_end == junction else a_end, b_end if b_start == junction else b_start,
                     np.concatenate([into, out[1:] if same_pixel else out])])
    return kept


def _merge_crossing_junctions(segments: list, positions: dict, distance: np.ndarray) -> list:
    """Merges two three-branch nodes joined by a segment shorter than CROSSING_GAP vessel widths: one crossing
    skeletonised as two junctions."""
    degree = _degrees(segments)
    merged: dict = {}

    def root(node):
        while node in merged:
            node = merged[node]
        return node

    kept = []
    for start, end, path in segments:
        a, b = root(start), root(end)
        width = 2 * float(np.median(distance[path[:, 0], path[:, 1]]))
        length = _path_length(path)
        if a != b and degree.get(a) == 3 and degree.get(b) == 3 and length <= CROSSING_GAP * max(width, 2.0):
            merged[b] = a
            positions[a] = tuple((np.array(positions[a]) + np.array(positions[b])) / 2)
            degree[a] = 4
            degree[b] = 0
            continue
        kept.append([start, end, path])
    return [[root(start), root(end), path] for start, end, path in kept]


def _calibres(path: np.ndarray, width_map: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The run of width_map >= 0.5 across the centre line at each path pixel, along the normal of the path's
    local direction (bilinear samples every CALIBRE_SAMPLE_STEP pixels)."""
    if len(path) < 2:
        return np.array([2 * float(distance[tuple(path[0])])]) if len(path) else np.zeros(0)
    half = 2 * float(distance[path[:, 0], path[:, 1]].max()) + 3
    offsets = np.arange(-half, half + CALIBRE_SAMPLE_STEP / 2, CALIBRE_SAMPLE_STEP)
    samples = _across(path, np.ones(len(path), bool), width_map, offsets, mode="constant")
    centre = len(offsets) // 2
    return (_edge(samples[:, centre:]) + _edge(samples[:, centre::-1])) * CALIBRE_SAMPLE_STEP


def _across(path: np.ndarray, at: np.ndarray, image: np.ndarray, offsets: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear samples of image along the normal of the path's local direction, at the given offsets (pixels),
    one row per path pixel selected by at."""
    from scipy import ndimage

    points = path.astype(np.float64)
    reach = min(len(points) - 1, 3)
    ahead = np.concatenate([points[reach:], np.repeat(points[-1:], reach, axis=0)])
    behind = np.concatenate([np.repeat(points[:1], reach, axis=0), points[:-reach]])
    direction = (ahead - behind)[at]
    direction /= np.maximum(np.hypot(*direction.T), 1e-9)[:, None]
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    rows = points[at, :1] + normal[:, :1] * offsets[None]
    cols = points[at, 1:] + normal[:, 1:] * offsets[None]
    return ndimage.map_coordinates(image, [rows.ravel(), cols.ravel()], order=1, mode=mode,
                                   cval=0.0).reshape(rows.shape)


def photo_calibres(path: np.ndarray, at: np.ndarray, channel: np.ndarray, guide: float) -> np.ndarray:
    """The vessel's width measured on the photo at the path pixels selected by at: its full width at half depth.
    channel: HxW, vessels darker than the background (a photo's green); guide: the map's calibre here (pixels),
    which says how far out the background lies (from 1 to 1.5 guides from the centre line, and 3 px more). Each
    profile is averaged with its neighbours' along the centre line (PROFILE_PIXELS), a central light reflex is
    removed by a grey opening half a vessel wide, and the width runs between the two points where the profile
    rises back to half way from its lowest to each side's background. NaN where there is too little contrast or no
    edge within reach."""
    from scipy import ndimage

    if len(path) < 2 or not at.any():
        return np.full(int(at.sum()), np.nan)
    guide = max(float(guide), 1.0)
    reach = 1.5 * guide + 3
    offsets = np.arange(-reach, reach + CALIBRE_SAMPLE_STEP / 2, CALIBRE_SAMPLE_STEP)
    raw = _across(path, at, channel, offsets, mode="nearest")
    raw = ndimage.uniform_filter1d(raw, min(PROFILE_PIXELS, len(raw)), axis=0, mode="nearest")
    opened = ndimage.grey_opening(raw, size=(1, int(0.5 * guide / CALIBRE_SAMPLE_STEP) | 1))
    outer = np.abs(offsets) >= guide
    left, right = raw[:, outer & (offsets < 0)], raw[:, outer & (offsets > 0)]
    centre = np.abs(offsets) <= 0.5 * guide + 1
    lowest_at = np.flatnonzero(centre)[0] + np.argmin(opened[:, centre], axis=1)
    lowest = opened[np.arange(len(opened)), lowest_at]
    # the brighter samples: a neighbouring vessel can take part of either side's background
    background = np.stack([np.percentile(left, BACKGROUND_PERCENTILE, axis=1),
                           np.percentile(right, BACKGROUND_PERCENTILE, axis=1)], axis=1)
    level = lowest[:, None] + 0.5 * (background - lowest[:, None])
    index = np.arange(len(offsets))[None]
    above_left = (opened >= level[:, :1]) & (index < lowest_at[:, None])
    above_right = (opened >= level[:, 1:]) & (index > lowest_at[:, None])
    found = above_left.any(axis=1) & above_right.any(axis=1)
    rows = np.arange(len(opened))
    j = np.where(above_left, index, -1).max(axis=1).clip(0, len(offsets) - 2)  # last sample above, left
    k = np.where(above_right, index, len(offsets)).min(axis=1).clip(1, len(offsets) - 1)  # first above, right
    left_edge = j + _fraction(opened[rows, j], opened[rows, j + 1], level[:, 0])
    right_edge = k - _fraction(opened[rows, k], opened[rows, k - 1], level[:, 1])
    spread = np.concatenate([left, right], axis=1)
    noise = 1.4826 * np.median(np.abs(spread - np.median(spread, axis=1, keepdims=True)), axis=1)
    depth = background.min(axis=1) - lowest
    clear = found & (depth > np.maximum(MIN_CONTRAST_NOISE * noise, MIN_DEPTH))
    return np.where(clear, (right_edge - left_edge) * CALIBRE_SAMPLE_STEP, np.nan)


def _fraction(above: np.ndarray, below: np.ndarray, level: np.ndarray) -> np.ndarray:
    """How far from the sample above level towards its neighbour below it the profile crosses level (0-1)."""
    return np.clip((above - level) / np.maximum(above - below, 1e-9), 0, 1)


def _edge(samples: np.ndarray) -> np.ndarray:
    """Where each row of samples, starting inside (>= 0.5), first falls below 0.5: in samples from the first,
    interpolated linearly between the last sample inside and the first outside."""
    outside = np.concatenate([samples < 0.5, np.ones((len(samples), 1), bool)], axis=1)
    first_out = np.argmax(outside, axis=1)
    padded = np.concatenate([samples, np.zeros((len(samples), 1))], axis=1)
    before = np.take_along_axis(padded, np.maximum(first_out - 1, 0)[:, None], axis=1)[:, 0]
    after = np.take_along_axis(padded, first_out[:, None], axis=1)[:, 0]
    fraction = np.clip((before - 0.5) / np.maximum(before - after, 1e-9), 0, 1)
    return np.where(first_out == 0, 0.0, first_out - 1 + fraction)


def _branch_direction(segment: Segment, node: Node) -> np.ndarray:
    path = segment.path if segment.start == node.id else segment.path[::-1]
    point = path[min(len(path) - 1, DIRECTION_PIXELS)]
    vector = np.array([point[0] - node.row, point[1] - node.col], dtype=np.float64)
    return vector / max(np.hypot(*vector), 1e-9)


def _pair_crossings(graph: VesselGraph) -> None:
    """At each four-branch node, the pairing of its branches into two straight vessels: the pairs whose
    directions are most nearly opposite, with like calibres as the tie-breaker."""
    at: dict = {}
    for segment in graph.segments:
        at.setdefault(segment.start, []).append(segment)
        if segment.end != segment.start:
            at.setdefault(segment.end, []).append(segment)
    for node in graph.nodes:
        branches = at.get(node.id, [])
        if node.kind != "crossing" or len(branches) != 4:
            continue
        directions = [_branch_direction(s, node) for s in branches]
        calibres = [max(s.calibre, 1e-3) for s in branches]

        def cost(pairs):
            return sum(float(directions[a] @ directions[b]) + 0.5 * abs(calibres[a] - calibres[b])
                       / max(calibres[a], calibres[b]) for a, b in pairs)

        best = min((((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))), key=cost)
        graph.through += [(branches[a].id, branches[b].id) for a, b in best]


def _group_vessels(graph: VesselGraph) -> None:
    """Vessel ids: segments joined through crossing pairs and through two-branch nodes (and past side branches, with
    SIDE_BRANCH_SHARE)."""
    parent = list(range(len(graph.segments)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a, b):
        parent[find(a)] = find(b)

    for a, b in graph.through:
        join(a, b)
    at: dict = {}
    for segment in graph.segments:
        for node in (segment.start, segment.end):
            at.setdefault(node, set()).add(segment.id)
    for node in graph.nodes:
        if node.kind == "pass" and len(at.get(node.id, ())) == 2:
            join(*at[node.id])
        elif node.kind == "bifurcation" and SIDE_BRANCH_SHARE is not None and len(at.get(node.id, ())) == 3:
            side, *trunk = sorted(at[node.id], key=lambda i: graph.segments[i].calibre)
            if graph.segments[side].calibre <= SIDE_BRANCH_SHARE * graph.segments[trunk[0]].calibre:
                join(*trunk)
    roots = {}
    for segment in graph.segments:
        segment.vessel = roots.setdefault(find(segment.id), len(roots))


def nearest_segment(graph: VesselGraph, mask: np.ndarray) -> np.ndarray:
    """Segment id of each vessel pixel (the segment of its nearest centre-line pixel); -1 elsewhere."""
    owner = np.full(graph.shape, -1, np.int32)
    if not graph.segments or not mask.any():
        return owner
    for segment in graph.segments:
        owner[segment.path[:, 0], segment.path[:, 1]] = segment.id
    centre = np.argwhere(owner >= 0)
    vessel = np.nonzero(mask)
    nearest = np.full(graph.shape, -1, np.int32)
    nearest[vessel] = owner[tuple(centre[_nearest(centre, np.stack(vessel, axis=1))[1]].T)]
    return nearest


def graph_of(prob: np.ndarray, labels: Optional[np.ndarray] = None) -> tuple[VesselGraph, Optional[np.ndarray]]:
    """The graph of a prediction (1xHxW vessel or 4xHxW A/V probabilities, as the runner holds them), and for an
    A/V prediction each vessel pixel's type by its vessel's vote (segments labelled too); None for a binary one.
    labels: the A/V prediction's class map, when the caller has it already."""
    from retinaseg.inference import VESSEL_THRESHOLD

    if prob.shape[0] == 1:
        return build_graph(prob[0] >= VESSEL_THRESHOLD, prob[0]), None
    mask = (av.class_map(prob) if labels is None else labels) != av.BACKGROUND
    graph = build_graph(mask, 1 - prob[av.BACKGROUND])
    return graph, label_vessels(graph, prob, mask)


def consistent_av(prob: np.ndarray) -> tuple[np.ndarray, VesselGraph]:
    """A/V probabilities (4xHxW) with one type per vessel, and the graph that decided it: each vessel's artery
    and vein probabilities are swapped where its pixels' likelier type disagrees with the type its vessel votes for.
    The vessel probability, the uncertain class and so the vessel map stay as they were."""
    labels = av.class_map(prob)
    graph, chosen = graph_of(prob, labels)
    if not graph.segments:
        return prob, graph
    clear = np.array([abs(margin) >= CLEAR_VOTE for margin in graph.vessel_margins] + [False])
    owner = graph.owner
    vessel_of = np.array([s.vessel for s in graph.segments] + [-1])
    flip = (labels != av.BACKGROUND) & (labels != av.UNCERTAIN) & (chosen != av.UNCERTAIN) & (chosen > 0) \
        & (chosen != labels) & clear[vessel_of[owner]]
    out = prob.copy()
    out[av.ARTERY][flip], out[av.VEIN][flip] = prob[av.VEIN][flip], prob[av.ARTERY][flip]
    return out, graph


def label_vessels(graph: VesselGraph, prob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each vessel pixel's type from its vessel's vote (HxW av codes; 0 outside the mask, UNCERTAIN where the
    evidence is even). Sets each segment's label."""
    if not graph.segments:
        return np.zeros(graph.shape, np.uint8)
    owner = graph.owner = nearest_segment(graph, mask)
    inside = owner >= 0
    votes = np.zeros((len(graph.segments), 2))
    for column, code in enumerate((av.ARTERY, av.VEIN)):
        votes[:, column] = np.bincount(owner[inside], weights=prob[code][inside], minlength=len(graph.segments))
    vessel_count = max(s.vessel for s in graph.segments) + 1
    vessel_of = np.array([s.vessel for s in graph.segments])
    vessel_votes = np.zeros((vessel_count, 2))
    np.add.at(vessel_votes, vessel_of, votes)
    vessel_votes = _lend_weak_votes(graph, vessel_votes)
    margin = (vessel_votes[:, 0] - vessel_votes[:, 1]) / np.maximum(vessel_votes.sum(axis=1), 1e-9)
    graph.vessel_margins = [float(m) for m in margin]
    vessel_label = np.where(margin > 0, av.ARTERY, av.VEIN)
    vessel_label[np.abs(margin) < 1e-3] = av.UNCERTAIN
    for segment in graph.segments:
        segment.label = int(vessel_label[segment.vessel])
    labels = np.zeros(graph.shape, np.uint8)
    labels[inside] = vessel_label[vessel_of[owner[inside]]]
    return labels


def _lend_weak_votes(graph: VesselGraph, vessel_votes: np.ndarray) -> np.ndarray:
    """Vessels meeting at a bifurcation share a type: a vessel whose own vote is weak (margin under WEAK_VOTE)
    adds the votes of the vessels it meets at bifurcations, scaled to its own size."""
    at: dict = {}
    for segment in graph.segments:
        for node in (segment.start, segment.end):
            if graph.nodes[node].kind == "bifurcation":
                at.setdefault(node, set()).add(segment.vessel)
    neighbours: dict = {}
    for vessels in at.values():
        for vessel in vessels:
            neighbours.setdefault(vessel, set()).update(vessels - {vessel})
    totals = vessel_votes.sum(axis=1)
    margin = np.abs(vessel_votes[:, 0] - vessel_votes[:, 1]) / np.maximum(totals, 1e-9)
    lent = vessel_votes.copy()
    for vessel, others in neighbours.items():
        if margin[vessel] >= WEAK_VOTE or not others:
            continue
        borrowed = vessel_votes[sorted(others)].sum(axis=0)
        lent[vessel] += borrowed / max(borrowed.sum(), 1e-9) * totals[vessel]
    return lent
