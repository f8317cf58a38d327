"""A small synthetic town for model tests and benchmarks (numpy + Pillow, seeded).

Roughly 0.46 m/px RGB: textured ground (grass / dry grass / soil patches, fine noise),
asphalt roads with cars, buildings 6-40 m (rotated rectangles and L shapes, gable or
flat roofs in distinct colours) casting shadows to the north-west, trees (green blobs,
some over roofs). Labels are the footprints with open-data noise: small per-building
offsets, a few buildings missing from the labels and a few labelled ones absent from
the imagery.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from pipeline.model.dataset import TrainingSample

GSD = 0.46  # metres per pixel

ROOFS = np.array(
    [
        (168, 72, 52),  # terracotta
        (124, 48, 42),  # dark red tiles
        (128, 128, 134),  # grey
        (72, 74, 82),  # dark grey / slate
        (205, 200, 190),  # light concrete
        (118, 88, 62),  # brown
        (92, 108, 128),  # blue-grey metal
        (176, 150, 110),  # sand
    ],
    dtype=np.float32,
)
GROUND = np.array([(92, 118, 62), (138, 130, 92), (128, 106, 82)], dtype=np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth noise in ~[-1, 1] with correlation length ~sigma px."""
    f = max(1, int(sigma // 4))  # smooth at a coarser grid, then upsample
    small = (-(-shape[0] // f), -(-shape[1] // f))
    n = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma / f)
    if f > 1:
        n = ndimage.zoom(n, f, order=1)[: shape[0], : shape[1]]
    return n / (n.std() + 1e-6) / 2.5


def _local_mask(polys: list[np.ndarray], pad: int = 0) -> tuple[int, int, np.ndarray]:
    """Rasterise polygons (x, y vertices) in their bounding box: ``(y0, x0, mask)``."""
    pts = np.concatenate(polys)
    x0, y0 = np.floor(pts.min(0)).astype(int) - pad
    x1, y1 = np.ceil(pts.max(0)).astype(int) + pad + 1
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(img)
    for p in polys:
        draw.polygon([(float(x - x0), float(y - y0)) for x, y in p], fill=1)
    return y0, x0, np.asarray(img, dtype=bool)


def _clip(y0: int, x0: int, m: np.ndarray, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """Window of the scene covered by a local mask, and the part of the mask inside it."""
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + m.shape[0], size), min(x0 + m.shape[1], size)
    if ya >= yb or xa >= xb:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)
    return (slice(ya, yb), slice(xa, xb)), m[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    pts = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)])
    return pts @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _paint(img: np.ndarray, win: tuple[slice, slice], m: np.ndarray, values) -> None:
    sub = img[:, win[0], win[1]]
    sub[:, m] = values
    img[:, win[0], win[1]] = sub


def make_town(size: int = 512, seed: int = 0, *, nodata: bool = False) -> TrainingSample:
    """One ``size`` x ``size`` scene as a :class:`TrainingSample` (seeded)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    # ground: blend of ground colours by low-frequency fields, plus texture
    fields = np.stack([_noise(rng, shape, 40) for _ in GROUND])
    w = np.exp(3 * fields)
    w /= w.sum(0, keepdims=True)
    img = np.einsum("khw,kc->chw", w, GROUND)
    img += 14 * _noise(rng, shape, 3)[None] + rng.normal(0, 6, (3, *shape)).astype(np.float32)

    # roads: a rough grid aligned with the town orientation
    theta = rng.uniform(0, math.pi / 2)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    road = np.zeros(shape, bool)
    spacing = rng.uniform(150, 230)
    for coord in (u, v):
        off = rng.uniform(0, spacing)
        half = rng.uniform(6, 10)
        road |= np.abs((coord - off + spacing / 2) % spacing - spacing / 2) < half
    asphalt = rng.uniform(70, 105)
    img[:, road] = (asphalt + 8 * _noise(rng, shape, 2)[road])[None] + rng.normal(
        0, 4, (3, int(road.sum()))
    )

    # cars on roads (roof-coloured distractors)
    ys, xs = np.nonzero(road)
    for _ in range(int(road.sum() / 1500)):
        k = rng.integers(len(ys))
        ang = theta + rng.choice([0, math.pi / 2])
        win, m = _clip(*_local_mask([_rect(xs[k], ys[k], 4, 9, ang)]), size)
        _paint(img, win, m, ROOFS[rng.integers(len(ROOFS))][:, None])

    # building footprints, non-overlapping, off the roads
    occupied = ndimage.binary_dilation(road, iterations=4)
    footprints: list[list[np.ndarray]] = []
    target = rng.uniform(0.15, 0.28) * size * size
    area, tries = 0.0, 0
    while area < target and tries < 400:
        tries += 1
        bw, bh = rng.uniform(6, 40, 2) / GSD
        if max(bw, bh) / min(bw, bh) > 3.5:
            continue
        cx, cy = rng.uniform(0, size, 2)
        ang = theta + rng.normal(0, 0.05) + rng.choice([0, math.pi / 2])
        polys = [_rect(cx, cy, bw, bh, ang)]
        if rng.random() < 0.25:  # L shape
            c, s = math.cos(ang), math.sin(ang)
            ow, oh = bw * rng.uniform(0.35, 0.6), bh * rng.uniform(0.5, 0.9)
            ox, oy = bw / 2 - ow / 2, bh / 2 + oh / 2 - 2
            polys.append(_rect(cx + ox * c - oy * s, cy + ox * s + oy * c, ow, oh, ang))
        win, m = _clip(*_local_mask(polys, pad=3), size)
        if m.sum() < 50 or (occupied[win] & ndimage.binary_dilation(m, iterations=3)).any():
            continue
        occupied[win] |= m
        area += m.sum()
        footprints.append(polys)

    # shadows to the north-west, drawn all at once
    sun = np.array([-1.0, -0.8]) / np.linalg.norm([-1.0, -0.8])
    sh_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(sh_img)
    for polys in footprints:
        height = rng.uniform(4, 14) / GSD * 0.5
        for t in np.linspace(0, height, 6)[1:]:
            for p in polys:
                draw.polygon([tuple(map(float, v)) for v in p + sun * t], fill=1)
    shadow = np.asarray(sh_img, dtype=bool) & ~(occupied & ~road)
    img[:, shadow] *= 0.45

    label = np.zeros(shape, np.uint8)
    for polys in footprints:
        y0, x0, m = _local_mask(polys)
        win, m = _clip(y0, x0, m, size)
        present = rng.random() > 0.03  # a few labelled buildings are demolished
        if present:
            colour = ROOFS[rng.integers(len(ROOFS))] * rng.uniform(0.9, 1.1)
            roof = np.broadcast_to(colour[:, None], (3, int(m.sum()))).copy()
            if rng.random() < 0.6:  # gable: two halves in different light
                p = polys[0]
                a, b = p[1] - p[0], p[3] - p[0]
                axis = a if np.linalg.norm(a) > np.linalg.norm(b) else b
                normal = np.array([-axis[1], axis[0]])
                cx, cy = p.mean(0)
                side = (xx[win][m] - cx) * normal[0] + (yy[win][m] - cy) * normal[1] > 0
                roof *= np.where(side, 1.12, 0.82)[None]
            roof += rng.normal(0, 5, roof.shape)
            _paint(img, win, m, roof)
            edge = m & ~ndimage.binary_erosion(m)
            _paint(img, win, edge, img[:, win[0], win[1]][:, edge] * 0.75)
        else:  # bare soil where the (still labelled) building was
            _paint(img, win, m, GROUND[2][:, None] + rng.normal(0, 8, (3, int(m.sum()))))
        if rng.random() > 0.03 or not present:  # a few are missing from the open data
            dy, dx = rng.integers(-2, 3, 2)  # open-data offset
            lw, lm = _clip(y0 + dy, x0 + dx, _local_mask(polys)[2], size)
            label[lw][lm] = 1

    # trees, some overlapping roofs, with their own shadows
    for _ in range(int(size * size / 2500)):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(4, 12)
        y0, x0 = int(cy - r) - 1, int(cx - r) - 1
        ly, lx = np.mgrid[0 : int(2 * r) + 3, 0 : int(2 * r) + 3].astype(np.float32)
        blob = (lx + x0 - cx) ** 2 + (ly + y0 - cy) ** 2 < r * r
        sh = (lx + x0 - cx - sun[0] * r) ** 2 + (ly + y0 - cy - sun[1] * r) ** 2 < r * r
        win, m = _clip(y0, x0, sh & ~blob, size)
        _paint(img, win, m, img[:, win[0], win[1]][:, m] * 0.6)
        win, m = _clip(y0, x0, blob, size)
        g = np.array([48, 88, 38], np.float32) * rng.uniform(0.8, 1.2)
        _paint(img, win, m, g[:, None] + 18 * rng.random(int(m.sum()))[None] - 9)

    gain = rng.uniform(0.9, 1.1)
    img = ndimage.gaussian_filter(img * gain, (0, 0.7, 0.7))
    image = np.clip(img, 0, 255).astype(np.uint8)
    valid = np.ones(shape, bool)
    if nodata:
        valid &= xx + yy < rng.uniform(1.3, 1.7) * size
        image[:, ~valid] = 0
    return TrainingSample(image=image, label=label, valid=valid, name=f"toytown-{seed}")


def make_split(
    n_train: int = 4, n_val: int = 2, size: int = 512, seed: int = 0
) -> tuple[list[TrainingSample], list[TrainingSample]]:
    """Disjoint train and validation scenes."""
    train = [make_town(size, seed * 1000 + i, nodata=i == 0) for i in range(n_train)]
    val = [make_town(size, seed * 1000 + 500 + i) for i in range(n_val)]
    return train, val
