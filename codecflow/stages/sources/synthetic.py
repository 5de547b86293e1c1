"""Synthetic, deterministic (seeded) test scenes: a moving textured video and a stereo video.

The scene: a large textured background (smooth colour gradients and shading, flat and patterned
shapes with anti-aliased edges, thin lines: compressible like natural video, no noise) that pans
smoothly, and a few textured objects (ellipses, rounded rectangles, polygons) moving on smooth
Lissajous paths in front of it. Everything is generated once (numpy + OpenCV) and each frame is
sliced and composited from it, so frames are fast to make (well over 200 fps at 320x192, tens of
fps at 1920x1080). The same seed gives the same frames on every machine.

Stereo: the scene is a stack of fronto-parallel layers (background far, objects nearer), each with
a constant integer disparity ``d`` (background smallest, nearer objects larger, at most
``max_disparity``). The right view is rendered with every layer shifted left by its disparity and
composited in the same depth order, so occlusions are correct. Convention (the usual one):

    left(x, y) == right(x - d(x, y), y)     for every left pixel whose surface is visible in both

where ``d`` is the disparity map of the left view (`render_stereo_pair` returns it). Pixels
near a layer's anti-aliased edge are blends of two layers, and left pixels occluded in the right
view (just beside a nearer object's edge) have no match.

Frames are yuv420p (I420). Composition runs in YUV 4:4:4 (textures converted once with the
stream's matrix and range) and chroma is 2x2-averaged per frame. After each instant is yielded the
stream's ``meta`` holds ``index``, ``pts`` (``index / fps``), ``capture_ts`` (monotonic time it was
made) and ``dropped`` (frames skipped to keep real time in live mode).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from codecflow.codecs import colour
from codecflow.data import MATRIX_CHOICES, RANGE_CHOICES, Frame, StreamInfo, chroma_size
from codecflow.pipeline import schema
from codecflow.stages.sources.base import Source, SourceStream




# --------------------------------------------------------------------------- textures
def _noise(rng, h: int, w: int, cells: float, octaves: int = 5, persistence: float = 0.5,
           channels: int = 1) -> np.ndarray:
    """Smooth fractal value noise, float32 h x w x channels, stretched to [0, 1]."""
    acc = np.zeros((h, w, channels), np.float32)
    amp, m = 1.0, max(h, w)
    for o in range(octaves):
        n = cells * (2 ** o)
        gh = max(2, int(round(n * h / m)) + 1)
        gw = max(2, int(round(n * w / m)) + 1)
        if o and (gh > h // 2 or gw > w // 2):
            break
        small = rng.random((gh, gw, channels), dtype=np.float32)
        up = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        acc += amp * up.reshape(h, w, channels)
        amp *= persistence
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _pattern(rng, h: int, w: int, period: float) -> np.ndarray:
    """A noise-free anti-aliased pattern in [0, 1], h x w: stripes, checker, grating or dots."""
    kind = rng.integers(0, 4)
    ang = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx * math.cos(ang) + yy * math.sin(ang)) * (2 * math.pi / period)
    v = (-xx * math.sin(ang) + yy * math.cos(ang)) * (2 * math.pi / period)
    if kind == 0:  # soft-edged stripes
        p = np.clip(np.sin(u) * 3.0, -1, 1) * 0.5 + 0.5
    elif kind == 1:  # checker
        p = np.clip(np.sin(u) * np.sin(v) * 6.0, -1, 1) * 0.5 + 0.5
    elif kind == 2:  # sinusoidal grating
        p = np.sin(u) * 0.5 + 0.5
    else:  # dots
        p = np.clip((np.cos(u) * np.cos(v) - 0.4) * 4.0, 0, 1)
    return p.astype(np.float32)


def _shape_mask(rng, h: int, w: int, kind: int | None = None) -> np.ndarray:
    """Anti-aliased filled shape covering most of an h x w box, float32 alpha in [0, 1]."""
    m = np.zeros((h, w), np.uint8)
    kind = int(rng.integers(0, 3)) if kind is None else kind
    sh = 4  # fixed-point shift for sub-pixel shape coordinates
    if kind == 0:  # ellipse
        cv2.ellipse(m, (int((w - 1) / 2 * 16), int((h - 1) / 2 * 16)),
                    (int(w * 0.48 * 16), int(h * 0.48 * 16)), 0, 0, 360, 255, -1, cv2.LINE_AA,
                    sh)
    elif kind == 1:  # rounded rectangle
        r = int(min(w, h) * rng.uniform(0.1, 0.3))
        x0, y0, x1, y1 = 1, 1, w - 2, h - 2
        cv2.rectangle(m, (x0 + r, y0), (x1 - r, y1), 255, -1)
        cv2.rectangle(m, (x0, y0 + r), (x1, y1 - r), 255, -1)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(m, (cx, cy), r, 255, -1, cv2.LINE_AA)
    else:  # convex polygon
        k = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = rng.uniform(0.75, 1.0, k)
        pts = np.stack([(w - 1) / 2 + np.cos(ang) * rad * (w - 2) / 2,
                        (h - 1) / 2 + np.sin(ang) * rad * (h - 2) / 2], axis=1)
        cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, sh)
    return m.astype(np.float32) / 255.0


def make_texture(rng, h: int, w: int, scale: float, shapes: float = 1.0) -> np.ndarray:
    """A natural-looking noise-free RGB texture, float32 h x w x 3 in [0, 1].

    ``scale`` is the characteristic length in pixels (the frame's short side): feature sizes
    follow it so a texture looks alike at every resolution. ``shapes`` scales the shape count.
    """
    m = max(h, w)
    cells = 2.5 * m / scale  # ~2.5 big colour blobs across a frame
    c0, c1 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    mix = _noise(rng, h, w, cells, octaves=4)
    tex = c0 + (c1 - c0) * mix  # h x w x 3
    shade = 0.55 + 0.6 * _noise(rng, h, w, cells * 1.5, octaves=5, persistence=0.55)
    detail = scale / 360.0
    n = int(round(shapes * 14 * h * w / (scale * scale)))
    sizes = np.sort(rng.uniform(0.03, 0.35, n))[::-1] * scale
    for s in sizes:
        sw = max(3, int(s * rng.uniform(0.5, 1.6)))
        sh = max(3, int(s * rng.uniform(0.5, 1.6)))
        if sw >= w or sh >= h:
            continue
        x, y = int(rng.integers(0, w - sw)), int(rng.integers(0, h - sh))
        a = _shape_mask(rng, sh, sw)[..., None]
        ca = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        if rng.random() < 0.5:
            fill = np.broadcast_to(ca, (sh, sw, 3))
        else:
            cb = rng.uniform(0.0, 1.0, 3).astype(np.float32)
            period = rng.uniform(4.0, 22.0) * max(1.0, detail * 0.75)
            p = _pattern(rng, sh, sw, period)[..., None]
            fill = ca + (cb - ca) * p
        region = tex[y:y + sh, x:x + sw]
        region[:] = region * (1 - a) + fill * a
    tex = tex * shade
    # thin lines (sharp edges, like wires, frames, text strokes)
    for _ in range(int(round(shapes * 6 * h * w / (scale * scale)))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        length = rng.uniform(0.05, 0.4) * scale
        ang = rng.uniform(0, 2 * math.pi)
        p1 = (int(p0[0] + length * math.cos(ang)), int(p0[1] + length * math.sin(ang)))
        col = tuple(float(c) for c in rng.uniform(0.0, 1.0, 3))
        cv2.line(tex, p0, p1, col, max(1, int(round(rng.uniform(1, 3) * detail))), cv2.LINE_AA)
    tex = cv2.GaussianBlur(tex, (0, 0), 0.5 * max(1.0, detail * 0.7))
    return np.clip(tex, 0.0, 1.0)


def _to_planes(rgb01: np.ndarray, space) -> np.ndarray:
    """float RGB [0,1] -> planar uint8 3 x H x W in the scene's space ('rgb' or (matrix, range))."""
    rgb8 = np.clip(np.rint(rgb01 * 255.0), 0, 255).astype(np.uint8)
    if space == "rgb":
        return np.ascontiguousarray(rgb8.transpose(2, 0, 1))
    matrix, rng_ = space
    yuv = colour.rgb_to_yuv444(rgb8, matrix, rng_)
    return np.ascontiguousarray(np.clip(np.rint(yuv), 0, 255).astype(np.uint8).transpose(2, 0, 1))


# ----------------------------------------------------------------------------- scene
@dataclass
class _Object:
    planes: np.ndarray  # 3 x h x w uint8
    alpha: np.ndarray  # h x w uint16 0..255
    inside: np.ndarray  # h x w bool: alpha == 255
    edge: tuple  # (ys, xs) of 0 < alpha < 255
    cx: tuple  # (centre, amplitude, frequency Hz, phase) of x, in pixels
    cy: tuple
    disparity: int

    def pos(self, t: float) -> tuple[int, int]:
        h, w = self.alpha.shape
        x = self.cx[0] + self.cx[1] * math.sin(2 * math.pi * self.cx[2] * t + self.cx[3])
        y = self.cy[0] + self.cy[1] * math.sin(2 * math.pi * self.cy[2] * t + self.cy[3])
        return int(round(x - w / 2)), int(round(y - h / 2))


class Scene:
    """A seeded layered scene: panning background + moving objects, optionally stereo.

    ``space``: "rgb" (planes R, G, B) or (matrix, range) for YUV 4:4:4 planes. ``max_disparity``
    0 makes a mono scene. ``background``: an optional RGB uint8 image used as the background
    texture instead of a generated one (resized to cover the panning area).
    """

    def __init__(self, width: int, height: int, seed: int = 0, objects: int | None = None,
                 max_disparity: int = 0, space="rgb", background: np.ndarray | None = None):
        if width < 2 or height < 2:
            raise ValueError(f"scene size must be at least 2x2, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.max_disparity = int(max_disparity)
        rng = np.random.default_rng(seed)
        s = float(min(width, height))
        self.scale = s
        # background pan: x0(t) = ax (1 - cos(2 pi t / Tx)), in 0 .. 2 ax (smooth, periodic)
        self.ax = int(round(0.2 * width))
        self.ay = int(round(0.06 * height))
        self.tx = rng.uniform(10.0, 16.0)
        self.ty = rng.uniform(13.0, 21.0)
        self.phy = rng.uniform(0, 2 * math.pi)
        if self.max_disparity > 0:
            self.bg_disparity = int(round(rng.uniform(0.05, 0.2) * self.max_disparity))
        else:
            self.bg_disparity = 0
        th = self.height + 2 * self.ay
        tw = self.width + 2 * self.ax + self.bg_disparity
        if background is not None:
            bg = cv2.resize(np.asarray(background, np.uint8), (tw, th),
                            interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            self.background = _to_planes(bg, space)
        else:
            self.background = _to_planes(make_texture(rng, th, tw, s), space)
        n = int(rng.integers(3, 6)) if objects is None else int(objects)
        if self.max_disparity > 0 and n:
            lo = self.bg_disparity + 1
            disps = np.sort(rng.integers(min(lo, self.max_disparity), self.max_disparity + 1, n))
        else:
            disps = np.zeros(n, int)
        self.objects = []
        for i in range(n):  # far to near: drawn in this order
            ow = max(2, int(s * rng.uniform(0.15, 0.4)))
            oh = max(2, int(ow * rng.uniform(0.6, 1.5)))
            ow, oh = min(ow, self.width), min(oh, self.height)
            tex = make_texture(rng, oh, ow, s * 0.6, shapes=0.8)
            alpha = np.rint(_shape_mask(rng, oh, ow) * 255).astype(np.uint16)
            inside = alpha == 255
            edge = np.nonzero((alpha > 0) & (alpha < 255))
            cx = (rng.uniform(0.3, 0.7) * width, rng.uniform(0.15, 0.45) * width,
                  rng.uniform(0.03, 0.12), rng.uniform(0, 2 * math.pi))
            cy = (rng.uniform(0.35, 0.65) * height, rng.uniform(0.05, 0.3) * height,
                  rng.uniform(0.03, 0.12), rng.uniform(0, 2 * math.pi))
            self.objects.append(_Object(_to_planes(tex, space), alpha, inside, edge, cx, cy,
                                        int(disps[i])))

    def pan(self, t: float) -> tuple[int, int]:
        x = self.ax * (1 - math.cos(2 * math.pi * t / self.tx))
        y = self.ay * (1 - math.cos(2 * math.pi * t / self.ty + self.phy)) if self.ay else 0.0
        return int(round(x)), int(round(y))

    def render(self, t: float, view: int = 0, with_disparity: bool = False):
        """Planes 3 x H x W uint8 of `view` (0 left, 1 right) at time t seconds; with
        ``with_disparity`` also the view's disparity map (float32 H x W; see the module doc)."""
        W, H = self.width, self.height
        x0, y0 = self.pan(t)
        if view:
            x0 += self.bg_disparity  # right(x) = left(x + d)
        out = self.background[:, y0:y0 + H, x0:x0 + W].copy()
        disp = np.full((H, W), self.bg_disparity, np.float32) if with_disparity else None
        for ob in self.objects:
            ox, oy = ob.pos(t)
            if view:
                ox -= ob.disparity
            oh, ow = ob.alpha.shape
            sx, sy = max(0, -ox), max(0, -oy)
            ex, ey = min(ow, W - ox), min(oh, H - oy)
            if ex <= sx or ey <= sy:
                continue
            fx, fy = ox + sx, oy + sy
            dst = out[:, fy:fy + ey - sy, fx:fx + ex - sx]
            ins = ob.inside[sy:ey, sx:ex]
            np.copyto(dst, ob.planes[:, sy:ey, sx:ex], where=ins[None])
            ys, xs = ob.edge
            keep = (ys >= sy) & (ys < ey) & (xs >= sx) & (xs < ex)
            ys, xs = ys[keep], xs[keep]
            a = ob.alpha[ys, xs]
            ty, tx = ys + oy, xs + ox
            bgv = out[:, ty, tx].astype(np.uint16)
            fg = ob.planes[:, ys, xs].astype(np.uint16)
            out[:, ty, tx] = ((bgv * (255 - a) + fg * a + 127) // 255).astype(np.uint8)
            if disp is not None:
                dd = disp[fy:fy + ey - sy, fx:fx + ex - sx]
                dd[ob.alpha[sy:ey, sx:ex] >= 128] = ob.disparity
        return (out, disp) if with_disparity else out


def planes_to_i420(planes: np.ndarray) -> Frame:
    """3 x H x W uint8 YUV 4:4:4 planes -> I420 Frame (2x2 box-averaged chroma)."""
    _, h, w = planes.shape
    cw, ch = chroma_size(w, h)
    out = [np.ascontiguousarray(planes[0])]
    for p in planes[1:]:
        if w % 2 or h % 2:
            p = cv2.copyMakeBorder(p, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        out.append(cv2.resize(p, (cw, ch), interpolation=cv2.INTER_AREA))
    return Frame("yuv420p", out)


def _to_rgb(planes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def render_stereo_pair(width: int = 256, height: int = 256, seed: int = 0,
                       max_disparity: int = 32, frame: int = 0, fps: float = 30.0,
                       objects: int | None = None, background: np.ndarray | None = None):
    """One synthetic stereo pair -> (left_rgb, right_rgb, disparity).

    left_rgb / right_rgb: uint8 H x W x 3. disparity: float32 H x W, the left view's disparity
    in pixels (left(x, y) == right(x - d, y) where the surface is visible in both views).
    ``frame`` / ``fps`` pick the instant of the moving scene; ``background`` optionally uses a
    photo as the far layer. To render many pairs of one scene, build a `Scene` once
    (``Scene(w, h, seed, objects, max_disparity, "rgb")``) and call ``render(t, view, True)``.
    """
    scene = Scene(width, height, seed, objects, max(1, int(max_disparity)), "rgb", background)
    t = frame / float(fps)
    left, disp = scene.render(t, 0, with_disparity=True)
    right = scene.render(t, 1)
    return _to_rgb(left), _to_rgb(right), disp


# --------------------------------------------------------------------------- sources
class _SyntheticBase(Source):
    views = 1

    def _scene(self) -> Scene:
        raise NotImplementedError

    def __init__(self, config, mode: str = "offline"):
        super().__init__(config, mode)
        c = config
        self.live = bool(c.realtime)
        self.scene = self._scene()
        self.info = StreamInfo(width=c.width, height=c.height, pix_fmt="yuv420p",
                               views=self.views, fps=float(c.fps), matrix=c.matrix,
                               range=c.range)

    def _instant(self, t: float) -> list:
        raise NotImplementedError

    def _frames(self, meta: dict):
        c = self.config
        fps = float(c.fps)
        t_start = time.monotonic()
        i, dropped = 0, 0
        while c.frames is None or i < c.frames:
            if c.realtime:
                due = t_start + i / fps
                now = time.monotonic()
                if now < due:
                    time.sleep(due - now)
                elif self.mode == "live" and now - due > 1.0 / fps:
                    # behind real time: skip the instants that are already past (like a camera)
                    skip = int((now - due) * fps)
                    if c.frames is not None:
                        skip = min(skip, c.frames - 1 - i)
                    if skip > 0:
                        i += skip
                        dropped += skip
            pictures = self._instant(i / fps)
            meta["index"] = i
            meta["pts"] = i / fps
            meta["capture_ts"] = time.monotonic()
            meta["dropped"] = dropped
            i += 1
            yield pictures

    def streams(self):
        meta = {"seed": self.config.seed, "dropped": 0}
        total = self.config.frames if not (self.live and self.mode == "live") else None
        yield SourceStream(self.config.name, self.info, self._frames(meta), total=total,
                           meta=meta)


class SyntheticVideoSource(_SyntheticBase):
    """A seeded moving textured scene (panning background + moving objects), yuv420p."""

    views = 1

    @dataclass
    class Config:
        width: int = schema.number(640, min=2, help="frame width")
        height: int = schema.number(360, min=2, help="frame height")
        fps: float = schema.number(30.0, min=0.001, help="frame rate")
        frames: int | None = schema.number(300, min=1, help="frames to make (null: endless)")
        seed: int = schema.option(0, "scene seed (same seed, same frames)")
        objects: int | None = schema.number(None, min=0, max=32,
                                            help="moving objects (default: 3..5 from the seed)")
        realtime: bool = schema.option(False, "pace frames at fps (live demos)")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="RGB->YUV matrix")
        range: str = schema.choice("limited", RANGE_CHOICES, help="YUV code range")
        name: str = schema.option("synthetic", "stream name")

    def _scene(self) -> Scene:
        c = self.config
        return Scene(c.width, c.height, c.seed, c.objects, 0, (c.matrix, c.range))

    def _instant(self, t: float) -> list:
        return [planes_to_i420(self.scene.render(t))]


class SyntheticStereoSource(_SyntheticBase):
    """The same kind of scene seen by two cameras (layered depths, known disparity):
    yuv420p pairs [left, right]."""

    views = 2

    @dataclass
    class Config:
        width: int = schema.number(640, min=2, help="frame width (each view)")
        height: int = schema.number(360, min=2, help="frame height")
        fps: float = schema.number(30.0, min=0.001, help="frame rate")
        frames: int | None = schema.number(300, min=1, help="pairs to make (null: endless)")
        seed: int = schema.option(0, "scene seed (same seed, same frames)")
        objects: int | None = schema.number(None, min=0, max=32,
                                            help="moving objects (default: 3..5 from the seed)")
        max_disparity: int = schema.number(32, min=1, max=1024,
                                           help="disparity of the nearest layer, pixels")
        realtime: bool = schema.option(False, "pace frames at fps (live demos)")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="RGB->YUV matrix")
        range: str = schema.choice("limited", RANGE_CHOICES, help="YUV code range")
        name: str = schema.option("synthetic_stereo", "stream name")

    def _scene(self) -> Scene:
        c = self.config
        return Scene(c.width, c.height, c.seed, c.objects, c.max_disparity, (c.matrix, c.range))

    def _instant(self, t: float) -> list:
        return [planes_to_i420(self.scene.render(t, 0)), planes_to_i420(self.scene.render(t, 1))]
