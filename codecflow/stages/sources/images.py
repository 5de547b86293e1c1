"""Still images: a folder of images (one stream per file), or of stereo pairs (one per pair).

Image streams are rgb24 (one H x W x 3 plane), one instant each; sizes may differ from file to
file (each stream has its own geometry). Supported: png, jpg, jpeg, bmp, ppm, pgm, pnm, webp,
tif, tiff (decoded by OpenCV; grey images become RGB, 16-bit ones 8-bit, alpha is dropped).

Every file is checked when the source is built (exists, a format OpenCV can read, a sane header;
stereo: every ``_L`` has its ``_R`` and, where the header tells the size, both have the same size),
so a bad folder fails before the pipeline writes anything. Pixels are decoded lazily, one stream
at a time, just before the stream is handed out; a file that then fails to decode is a
SourceError naming it.

``matrix`` / ``range`` only matter to codecs that convert RGB to YUV (defaults bt709 / limited).
"""

from __future__ import annotations

import fnmatch
import os
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from codecflow.data import MATRIX_CHOICES, RANGE_CHOICES, Frame, StreamInfo
from codecflow.media import IMAGE_EXTS
from codecflow.errors import SourceError
from codecflow.pipeline import schema
from codecflow.stages.sources.base import Source, SourceStream

_PAIR_RE = re.compile(r"^(?P<name>.+)_(?P<side>[LRlr])$")



# ---------------------------------------------------------------------- header sizes
def _jpeg_size(f) -> tuple[int, int] | None:
    if f.read(2) != b"\xff\xd8":
        raise ValueError("not a JPEG file (no SOI marker)")
    while True:
        b = f.read(1)
        while b and b != b"\xff":
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            raise ValueError("JPEG file ends before its frame header")
        marker = b[0]
        if marker in (0x01,) or 0xD0 <= marker <= 0xD8:
            continue
        if marker == 0xD9:
            raise ValueError("JPEG file has no frame header")
        seg = f.read(2)
        if len(seg) != 2:
            raise ValueError("JPEG file truncated")
        (length,) = struct.unpack(">H", seg)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data = f.read(5)
            if len(data) != 5:
                raise ValueError("JPEG frame header truncated")
            _, h, w = struct.unpack(">BHH", data)
            return (w, h) if w and h else None
        f.seek(length - 2, os.SEEK_CUR)


def _pnm_size(f) -> tuple[int, int]:
    magic = f.read(2)
    if magic[:1] != b"P" or magic[1:2] not in b"123456":
        raise ValueError("not a PNM file")
    tokens, cur = [], b""
    while len(tokens) < 2:
        c = f.read(1)
        if not c:
            raise ValueError("PNM header truncated")
        if c == b"#":
            while c not in (b"\n", b""):
                c = f.read(1)
            c = b" "
        if c.isspace():
            if cur:
                tokens.append(int(cur))
                cur = b""
        else:
            cur += c
    return tokens[0], tokens[1]


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file header for PNG, JPEG, BMP, PNM and WebP without decoding;
    None for other formats. ValueError for a header that is not valid."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise ValueError("PNG header truncated")
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"\xff\xd8":
            f.seek(0)
            return _jpeg_size(f)
        if head[:2] == b"BM" and len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            return abs(w), abs(h)
        if head[:1] == b"P" and head[1:2] in b"123456" and len(head) >= 2:
            f.seek(0)
            return _pnm_size(f)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            f.seek(12)
            chunk = f.read(30)
            kind = chunk[:4]
            if kind == b"VP8 " and len(chunk) >= 18:
                w, h = struct.unpack("<HH", chunk[14:18])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L" and len(chunk) >= 13:
                (b,) = struct.unpack("<I", chunk[9:13])
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if kind == b"VP8X" and len(chunk) >= 18:
                w = int.from_bytes(chunk[12:15], "little") + 1
                h = int.from_bytes(chunk[15:18], "little") + 1
                return w, h
            return None
    return None


def check_image(path: str) -> tuple[int, int] | None:
    """Cheap up-front check (no decode): SourceError naming the file if it cannot be an image
    OpenCV reads. Returns the header size when known."""
    import cv2

    if not os.path.isfile(path):
        raise SourceError(f"image {path}: no such file")
    if os.path.getsize(path) == 0:
        raise SourceError(f"image {path}: the file is empty")
    try:
        readable = cv2.haveImageReader(path)
    except cv2.error:
        readable = False
    if not readable:
        raise SourceError(f"image {path}: unreadable: not an image format OpenCV can decode")
    try:
        size = image_size(path)
    except (ValueError, struct.error, OSError) as e:
        raise SourceError(f"image {path}: unreadable: {e}") from e
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise SourceError(f"image {path}: unreadable: header says {size[0]}x{size[1]}")
    return size


def read_rgb(path: str) -> np.ndarray:
    """Decode an image file -> uint8 H x W x 3 RGB; SourceError naming the file."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise SourceError(f"image {path}: cannot read: {e.strerror or e}") from e
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise SourceError(f"image {path}: unreadable: OpenCV cannot decode it (corrupt or "
                          f"unsupported file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------- file listing
def _list_images(folder: str, recursive: bool) -> list[str]:
    """Relative paths of image files under `folder`, sorted."""
    out = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for f in files:
                if f.lower().endswith(IMAGE_EXTS):
                    out.append(os.path.relpath(os.path.join(root, f), folder))
    else:
        out = [f for f in os.listdir(folder)
               if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, f))]
    return sorted(out)


def _matches(rel: str, pattern: str | None) -> bool:
    if not pattern:
        return True
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(os.path.basename(rel), pattern)


def _stream_name(rel_stem: str) -> str:
    return rel_stem.replace(os.sep, "_").replace("/", "_")


def _unique(name: str, used: set, alt: str) -> str:
    if name in used:
        name = alt
    base, k = name, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


@dataclass
class _Entry:
    name: str
    paths: list  # one path, or [left, right]
    size: tuple | None  # header size when known


class _ImageSourceBase(Source):
    live = False
    views = 1

    def __init__(self, config, mode: str = "offline"):
        super().__init__(config, mode)
        self.entries = self.validate()

    def validate(self) -> list:
        raise NotImplementedError

    def _info(self, w: int, h: int) -> StreamInfo:
        return StreamInfo(width=w, height=h, pix_fmt="rgb24", views=self.views,
                          matrix=self.config.matrix, range=self.config.range)

    def streams(self):
        for e in self.entries:
            imgs = [read_rgb(p) for p in e.paths]
            h, w = imgs[0].shape[:2]
            for p, im in zip(e.paths[1:], imgs[1:]):
                if im.shape[:2] != (h, w):
                    raise SourceError(f"stereo pair {e.name}: {os.path.basename(p)} is "
                                      f"{im.shape[1]}x{im.shape[0]} but "
                                      f"{os.path.basename(e.paths[0])} is {w}x{h}; both views "
                                      f"must have the same size")
            frames = [Frame.rgb(im) for im in imgs]
            meta = {"path": e.paths[0] if len(e.paths) == 1 else list(e.paths), "index": 0,
                    "pts": 0.0}
            yield SourceStream(e.name, self._info(w, h), iter([frames]), total=1, meta=meta)


class ImageFolderSource(_ImageSourceBase):
    """A folder of images (or one image): one rgb24 stream per file, named by its stem."""

    views = 1

    @dataclass
    class Config:
        path: str = field(metadata={"help": "a folder of images, or one image file"})
        pattern: str | None = schema.option(None, "glob on file names, e.g. 'kodim*.png'")
        recursive: bool = schema.option(False, "also look in sub-folders (names get the folder prefix)")
        frames: int | None = schema.option(None, "ignored (an image is one frame)")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="RGB->YUV matrix for codecs")
        range: str = schema.choice("full", RANGE_CHOICES, help="YUV range for codecs (RGB pictures are full range)")

    def validate(self) -> list[_Entry]:
        c = self.config
        if not os.path.exists(c.path):
            raise SourceError(f"images source: {c.path}: no such file or folder")
        if os.path.isdir(c.path):
            rels = [r for r in _list_images(c.path, c.recursive) if _matches(r, c.pattern)]
            if not rels:
                what = f" matching {c.pattern!r}" if c.pattern else ""
                raise SourceError(f"images source: folder {c.path} contains no images{what} "
                                  f"({', '.join(IMAGE_EXTS)})")
            paths = [(os.path.join(c.path, r), r) for r in rels]
        else:
            paths = [(c.path, os.path.basename(c.path))]
        out, used = [], set()
        for p, rel in paths:
            size = check_image(p)
            stem = os.path.splitext(rel)[0]
            name = _unique(_stream_name(stem), used, _stream_name(rel).replace(".", "_"))
            out.append(_Entry(name, [p], size))
        return out


class StereoImageFolderSource(_ImageSourceBase):
    """A folder of ``<name>_L.<ext>`` / ``<name>_R.<ext>`` pairs: one rgb24 stream per pair
    (views=2, frames [left, right]), named ``<name>``."""

    views = 2

    @dataclass
    class Config:
        path: str = field(metadata={"help": "a folder of NAME_L/NAME_R images, or one _L file"})
        pattern: str | None = schema.option(None, "glob on file names, e.g. 'Adirondack*'")
        recursive: bool = schema.option(False, "also look in sub-folders (names get the folder prefix)")
        frames: int | None = schema.option(None, "ignored (a pair is one instant)")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="RGB->YUV matrix for codecs")
        range: str = schema.choice("full", RANGE_CHOICES, help="YUV range for codecs (RGB pictures are full range)")

    def validate(self) -> list[_Entry]:
        c = self.config
        if not os.path.exists(c.path):
            raise SourceError(f"stereo_images source: {c.path}: no such file or folder")
        if os.path.isdir(c.path):
            folder, rels = c.path, _list_images(c.path, c.recursive)
            wanted = {r for r in rels if _matches(r, c.pattern)}
        else:
            folder = os.path.dirname(c.path) or "."
            base = os.path.basename(c.path)
            rels = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS)]
            wanted = {base}
        # (sub-folder, pair name) -> {"L": [rel...], "R": [rel...]}
        groups: dict = {}
        for r in rels:
            stem, _ = os.path.splitext(r)
            m = _PAIR_RE.match(os.path.basename(stem))
            if not m:
                if r in wanted and not os.path.isdir(c.path):
                    raise SourceError(f"stereo_images source: {os.path.join(folder, r)}: the "
                                      f"name must end in _L or _R (e.g. scene_L.png)")
                continue
            key = (os.path.dirname(r), m.group("name"))
            groups.setdefault(key, {"L": [], "R": []})[m.group("side").upper()].append(r)
        out, used = [], set()
        for (sub, name), sides in sorted(groups.items()):
            if not any(r in wanted for r in sides["L"] + sides["R"]):
                continue
            for side, other in (("L", "R"), ("R", "L")):
                if not sides[side]:
                    have = os.path.join(folder, sides[other][0])
                    raise SourceError(f"stereo_images source: {have} has no {side} partner "
                                      f"(expected {name}_{side}.<ext> next to it)")
                if len(sides[side]) > 1:
                    raise SourceError(f"stereo_images source: pair {name} has several {side} "
                                      f"views: {', '.join(sides[side])}")
            lp = os.path.join(folder, sides["L"][0])
            rp = os.path.join(folder, sides["R"][0])
            ls, rs = check_image(lp), check_image(rp)
            if ls is not None and rs is not None and tuple(ls) != tuple(rs):
                raise SourceError(f"stereo_images source: {rp} is {rs[0]}x{rs[1]} but {lp} is "
                                  f"{ls[0]}x{ls[1]}; both views must have the same size")
            sname = _stream_name(os.path.join(sub, name)) if sub else name
            out.append(_Entry(_unique(sname, used, sname + "_pair"), [lp, rp], ls))
        if not out:
            what = f" matching {c.pattern!r}" if c.pattern else ""
            raise SourceError(f"stereo_images source: {c.path} contains no NAME_L/NAME_R image "
                              f"pairs{what}")
        return out
