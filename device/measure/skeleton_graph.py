"""Skeleton graph machinery behind ``device.measure.hair_metrics.split_strands``: branch extraction,
bridge/crossing contraction, spur pruning, pairing of branches at junctions, chaining and
corner cuts. See the ``hair_metrics`` module docstring for the algorithm; everything here is
private to it (measurements live in ``device.measure.strand_measures``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_NEIGHBOURS = np.array(
    [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)], dtype=np.intp
)  # (dy, dx)


@dataclass
class _Graph:
    """Skeleton branches (flat, ordered) and junction nodes.

    pts: (T, 2) intp (x, y), the ordered points of every branch back to back.
    start, stop: (B,) intp slice of ``pts`` of each branch.
    closed: (B,) bool, isolated loop. ends: (B, 2) intp node id at each end, -1 = free.
    length: (B,) float px. alive: (B,) bool. node_r: (J,) float node radius, px.
    """

    pts: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    closed: np.ndarray
    ends: np.ndarray
    length: np.ndarray
    alive: np.ndarray
    node_r: np.ndarray


def _ranges(first: np.ndarray, count: np.ndarray, modulo: np.ndarray | None = None) -> np.ndarray:
    """Concatenate ``arange(first[i], first[i] + count[i])`` (optionally mod ``modulo[i]``)."""
    total = int(count.sum())
    seg = np.repeat(np.arange(len(count)), count)
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    if modulo is None:
        return first[seg] + within
    return (first[seg] + within) % modulo[seg]


def _ordered_branches(branch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order the pixels of every 1-px-wide path or loop in ``branch`` (HxW bool).

    The outer border of a 1-pixel-wide open path (``cv2.findContours``) runs from one end to
    the other and back; the points between its two turnarounds are the ordered path. A
    border without turnaround is a closed loop. Returns (points (T, 2) intp (x, y),
    counts (B,) intp, closed (B,) bool).
    """
    contours, hier = cv2.findContours(branch.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hier is None:
        return np.zeros((0, 2), np.intp), np.zeros(0, np.intp), np.zeros(0, bool)
    outer = [c for c, h in zip(contours, hier[0], strict=True) if h[3] == -1]
    lens = np.array([len(c) for c in outer], np.intp)
    c = np.concatenate(outer).reshape(-1, 2).astype(np.intp)
    cs = np.cumsum(lens) - lens
    cid = np.repeat(np.arange(len(lens)), lens)
    idx = np.arange(len(c))
    prev = idx - 1
    prev[cs] = cs + lens - 1
    nxt = idx + 1
    nxt[cs + lens - 1] = cs
    tpos = np.flatnonzero((c[prev] == c[nxt]).all(axis=1))
    tcount = np.bincount(cid[tpos], minlength=len(lens))
    first = cs.copy()
    second = cs + lens - 1
    has, fi = np.unique(cid[tpos], return_index=True)
    first[has] = tpos[fi]
    two = tcount[has] >= 2
    second[has[two]] = tpos[fi[two] + 1]
    count = np.where(tcount >= 2, second - first + 1, np.where(tcount == 0, lens, lens // 2 + 1))
    closed = tcount == 0
    gidx = cs[np.repeat(np.arange(len(lens)), count)] + _ranges(first - cs, count, lens)
    return c[gidx], count, closed


def _build_graph(sk: np.ndarray, diam: np.ndarray) -> _Graph:
    """Branches and junction nodes of a skeleton (HxW bool); ``diam`` from _diameter_map."""
    k = np.ones((3, 3), np.float32)
    k[1, 1] = 0
    nb = cv2.filter2D(sk.astype(np.uint8), cv2.CV_16S, k, borderType=cv2.BORDER_CONSTANT)
    junction = sk & (nb >= 3)
    n_j, lab_j = cv2.connectedComponents(junction.astype(np.uint8), connectivity=8)
    pts, count, closed = _ordered_branches(sk & ~junction)
    node_r = np.zeros(max(n_j, 1), np.float64)
    if n_j > 1:
        ys, xs = np.nonzero(junction)
        np.maximum.at(node_r, lab_j[ys, xs].astype(np.intp), diam[ys, xs] / 2.0)
    stop = np.cumsum(count)
    start = stop - count
    nbr = len(count)
    ends = np.full((nbr, 2), -1, np.intp)
    if n_j > 1 and nbr:
        padded = np.pad(lab_j, 1)
        dy, dx = _NEIGHBOURS[:, 0], _NEIGHBOURS[:, 1]
        for e, at in enumerate((start, stop - 1)):
            p = pts[at]
            js = padded[p[:, 1, None] + 1 + dy, p[:, 0, None] + 1 + dx]  # (B, 8)
            ends[:, e] = js.max(axis=1)
        # a one-pixel branch may join two different nodes
        one = count == 1
        if one.any():
            p = pts[start[one]]
            js = padded[p[:, 1, None] + 1 + dy, p[:, 0, None] + 1 + dx]
            lo = np.where(js > 0, js, np.iinfo(np.int32).max).min(axis=1)
            ends[one, 1] = np.where(lo == np.iinfo(np.int32).max, ends[one, 0], lo)
        ends[ends == 0] = -1
        ends[closed] = -1
    step = np.zeros(len(pts), np.float64)
    if len(pts) > 1:
        d = np.diff(pts, axis=0)
        step[:-1] = np.hypot(d[:, 0], d[:, 1])
        step[stop - 1] = 0.0
    length = np.add.reduceat(step, start) if nbr else np.zeros(0)
    if closed.any():
        d = pts[start[closed]] - pts[stop[closed] - 1]
        length[closed] += np.hypot(d[:, 0], d[:, 1])
    return _Graph(pts, start, stop, closed, ends, length, np.ones(nbr, bool), node_r)


def _contract_bridges(g: _Graph, min_bridge_px: float) -> None:
    """Merge junction nodes joined by short branches (shallow crossings) into one node."""
    n = len(g.node_r)
    a, c = g.ends[:, 0], g.ends[:, 1]
    both = (a >= 0) & (c >= 0) & ~g.closed
    ra = g.node_r[np.maximum(a, 0)]
    rc = g.node_r[np.maximum(c, 0)]
    bridge = both & (g.length <= np.maximum(min_bridge_px, ra + rc))
    if not bridge.any():
        return
    g.alive[bridge] = False
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a[bridge].tolist(), c[bridge].tolist(), strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[ry] = rx
    root = np.array([find(x) for x in range(n)], np.intp)
    r = np.zeros(n, np.float64)
    np.maximum.at(r, root, g.node_r)
    g.node_r = r
    g.ends = np.where(g.ends >= 0, root[np.maximum(g.ends, 0)], -1)


def _contract_crossings(g: _Graph, span: int, tolerance_deg: float) -> None:
    """Contract longer bridges where two strands cross at a shallow angle.

    Two strands crossing at angle t with width w share a stretch of about w / sin(t / 2)
    px, so the skeleton has two degree-3 nodes joined by a bridge. The bridge is contracted
    (up to 6 x the nodes' radii + 4 px) when the two other branches at one node continue
    straight into the two other branches at the other node (both pairs within
    ``tolerance_deg`` of straight-through); one hair merely touching another fails this.
    """
    both = g.alive & (g.ends[:, 0] >= 0) & (g.ends[:, 1] >= 0) & (g.ends[:, 0] != g.ends[:, 1])
    a, c = g.ends[:, 0], g.ends[:, 1]
    limit = 6.0 * (g.node_r[np.maximum(a, 0)] + g.node_r[np.maximum(c, 0)]) + 4.0
    cand = np.flatnonzero(both & (g.length <= limit))
    if len(cand) == 0:
        return
    at: dict[int, list[int]] = {}
    for code in np.flatnonzero((g.alive[:, None] & (g.ends >= 0)).ravel()).tolist():
        at.setdefault(int(g.ends.flat[code]), []).append(code)
    dirs = _end_directions(g, span).reshape(-1, 2)
    max_cos = -math.cos(math.radians(tolerance_deg))
    root = np.arange(len(g.node_r))
    touched: set[int] = set()
    for b in cand[np.argsort(g.length[cand], kind="stable")].tolist():
        na, nc = int(a[b]), int(c[b])
        if na in touched or nc in touched or len(at[na]) != 3 or len(at[nc]) != 3:
            continue
        oa = [x for x in at[na] if x // 2 != b]
        oc = [x for x in at[nc] if x // 2 != b]
        if len(oa) != 2 or len(oc) != 2:
            continue

        def straight(x: int, y: int) -> bool:
            return float(dirs[x] @ dirs[y]) <= max_cos

        if (straight(oa[0], oc[0]) and straight(oa[1], oc[1])) or (straight(oa[0], oc[1]) and straight(oa[1], oc[0])):
            g.alive[b] = False
            root[nc] = na
            touched.update((na, nc))
    if touched:
        g.node_r[root] = np.maximum(g.node_r[root], g.node_r)
        g.ends = np.where(g.ends >= 0, root[np.maximum(g.ends, 0)], -1)


def _prune_spurs(g: _Graph, spur_length_px: float) -> None:
    """Remove short free-end branches hanging off nodes of degree >= 3, repeatedly."""
    n = len(g.node_r)
    free0, free1 = g.ends[:, 0] < 0, g.ends[:, 1] < 0
    node = np.where(free0, g.ends[:, 1], g.ends[:, 0])
    short = (free0 ^ free1) & ~g.closed & (g.length < spur_length_px + g.node_r[node])
    while True:
        e = g.ends[g.alive]
        deg = np.bincount(e[e >= 0], minlength=n)
        cand = np.flatnonzero(g.alive & short & (deg[node] >= 3))
        if len(cand) == 0:
            return
        removed = False
        for b in cand[np.argsort(g.length[cand], kind="stable")].tolist():
            j = int(node[b])
            if deg[j] >= 3:
                g.alive[b] = False
                deg[j] -= 1
                removed = True
        if not removed:
            return


def _end_directions(g: _Graph, span: int) -> np.ndarray:
    """(B, 2, 2) unit vectors (x, y) pointing from each branch end into the branch.

    Measured from ``node radius`` px inside the branch (the skeleton bends near a junction)
    over ``span`` px.
    """
    count = g.stop - g.start
    out = np.zeros((len(count), 2, 2), np.float64)
    for e in (0, 1):
        node = g.ends[:, e]
        skip = np.where(node >= 0, np.rint(g.node_r[np.maximum(node, 0)]), 0).astype(np.intp)
        skip = np.minimum(skip, count // 3)
        if e == 0:
            i0 = g.start + skip
            i1 = np.minimum(i0 + span, g.stop - 1)
            whole = g.pts[g.stop - 1] - g.pts[g.start]
        else:
            i0 = g.stop - 1 - skip
            i1 = np.maximum(i0 - span, g.start)
            whole = g.pts[g.start] - g.pts[g.stop - 1]
        v = (g.pts[i1] - g.pts[i0]).astype(np.float64)
        zero = ~v.any(axis=1)
        v[zero] = whole[zero]
        norm = np.hypot(v[:, 0], v[:, 1])
        out[:, e] = v / np.maximum(norm, 1e-9)[:, None]
    return out


def _pair_ends(g: _Graph, span: int, tolerance_deg: float) -> np.ndarray:
    """Pair branch ends at each node by straightness, greedily (straightest pair first).

    Returns (B, 2) intp: partner end code ``2 * branch + end`` of each end, -1 = unpaired.
    """
    partner = np.full(g.ends.shape, -1, np.intp)
    codes = np.flatnonzero((g.alive[:, None] & (g.ends >= 0)).ravel())  # 2 * branch + end
    if len(codes) < 2:
        return partner
    nodes = g.ends.ravel()[codes]
    order = np.argsort(nodes, kind="stable")
    codes, nodes = codes[order], nodes[order]
    # all pairs (i, j), i < j, of ends at the same node
    size = np.bincount(nodes)[nodes]
    first = np.searchsorted(nodes, nodes)  # index of the node's first end
    rank = np.arange(len(nodes)) - first
    n_after = size - rank - 1
    i = np.repeat(np.arange(len(nodes)), n_after)
    j = i + 1 + (np.arange(len(i)) - np.repeat(np.cumsum(n_after) - n_after, n_after))
    if len(i) == 0:
        return partner
    dirs = _end_directions(g, span).reshape(-1, 2)
    cos = (dirs[codes[i]] * dirs[codes[j]]).sum(axis=1)
    ok = cos <= -math.cos(math.radians(tolerance_deg))
    i, j, cos = i[ok], j[ok], cos[ok]
    flat = partner.ravel()
    used = np.zeros(len(nodes), bool)
    order = np.argsort(cos, kind="stable")
    for a, c in zip(i[order].tolist(), j[order].tolist(), strict=True):
        if used[a] or used[c]:
            continue
        used[a] = used[c] = True
        flat[codes[a]], flat[codes[c]] = codes[c], codes[a]
    return partner


def _chains(g: _Graph, partner: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Join paired branches into ordered point chains; returns (points (K, 2), closed)."""
    p = partner.ravel().tolist()
    start, stop = g.start.tolist(), g.stop.tolist()
    alive = np.flatnonzero(g.alive).tolist()
    closed = g.closed.tolist()
    visited = [False] * len(start)
    out: list[tuple[np.ndarray, bool]] = []

    def walk(b: int, e: int) -> tuple[np.ndarray, bool]:
        idx = []
        first = b
        loop = False
        while True:
            visited[b] = True
            r = np.arange(start[b], stop[b])
            idx.append(r if e == 0 else r[::-1])
            nxt = p[2 * b + 1 - e]
            if nxt < 0:
                break
            b, e = divmod(nxt, 2)
            if b == first or visited[b]:
                loop = True
                break
        return g.pts[np.concatenate(idx)], loop

    for b in alive:  # open chains start at an unpaired end
        if visited[b] or closed[b]:
            continue
        if p[2 * b] < 0:
            out.append(walk(b, 0))
        elif p[2 * b + 1] < 0:
            out.append(walk(b, 1))
    for b in alive:  # what remains is closed: isolated loops, cycles through nodes
        if visited[b]:
            continue
        if closed[b]:
            visited[b] = True
            out.append((g.pts[start[b] : stop[b]], True))
        else:
            out.append(walk(b, 0))
    return out


def _cut_corners(
    chains: list[tuple[np.ndarray, bool]], span: int, corner_deg: float
) -> tuple[list[np.ndarray], list[bool]]:
    """Cut open chains where they turn by more than ``corner_deg`` over ``span`` px.

    The turn at point i is the angle between p[i] - p[i - span] and p[i + span] - p[i]; each
    run of too-sharp points is cut once, at its sharpest point (the cut point is shared by
    both pieces). Returns (pieces, closed flags).
    """
    pieces = [c for c, _ in chains]
    closed = [f for _, f in chains]
    lens = np.array([len(c) for c in pieces], np.intp)
    if len(pieces) == 0 or lens.max() < 2 * span + 1:
        return pieces, closed
    q = np.concatenate(pieces).astype(np.float64)
    cid = np.repeat(np.arange(len(lens)), lens)
    local = np.arange(len(q)) - np.repeat(np.cumsum(lens) - lens, lens)
    valid = (local >= span) & (local + span < lens[cid]) & ~np.asarray(closed)[cid]
    k = np.flatnonzero(valid)
    v1 = q[k] - q[k - span]
    v2 = q[k + span] - q[k]
    cos = (v1 * v2).sum(axis=1) / np.maximum(np.hypot(v1[:, 0], v1[:, 1]) * np.hypot(v2[:, 0], v2[:, 1]), 1e-9)
    sharp = cos < math.cos(math.radians(corner_deg))
    if not sharp.any():
        return pieces, closed
    k, cos = k[sharp], cos[sharp]
    out_p: list[np.ndarray] = []
    out_c: list[bool] = []
    cut_chains = set(np.unique(cid[k]).tolist())
    for c, (pts, f) in enumerate(chains):
        if c not in cut_chains:
            out_p.append(pts)
            out_c.append(f)
            continue
        sel = cid[k] == c
        idx, cs = local[k[sel]], cos[sel]
        runs = np.split(np.arange(len(idx)), np.flatnonzero(np.diff(idx) > 1) + 1)
        prev = 0
        for r in runs:
            cut = int(idx[r[np.argmin(cs[r])]])
            out_p.append(pts[prev : cut + 1])
            out_c.append(False)
            prev = cut
        out_p.append(pts[prev:])
        out_c.append(False)
    return out_p, out_c
