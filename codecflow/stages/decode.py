"""Decode .cfl files back to pictures (the `codecflow decode` command), optionally measuring
PSNR against the source. Imports the codec named in the file header (torch only for learned
codecs)."""

from __future__ import annotations

import glob
import logging
import os

from codecflow.data import StreamInfo

from codecflow.codecs.registry import create_codec
from codecflow.codecs.container import CflReader, header_stream_info
from codecflow.codecs.decoding import decode_checked, decode_unit
from codecflow.codecs.metrics import frame_psnr, mean_metrics
from codecflow.errors import CodecError, CodecflowError
from codecflow.media import IMAGE_EXTS
from codecflow.pipeline import schema
from codecflow.stages.sinks.recon import ReconWriter

log = logging.getLogger("codecflow.decode")


def codec_for_header(h: dict, path: str, device: str = "cpu"):
    try:
        codec = create_codec(h["codec"], q=h["q"], device=device)
    except CodecflowError as e:
        raise CodecError(f"{path}: cannot create codec {h['codec']!r}: {e}") from None
    if h.get("weights") and codec.weights_id and not codec.accepts_weights(h["weights"]):
        raise CodecError(f"{path}: coded with {h['codec']} weights {h['weights']}, but the "
                         f"installed weights are {codec.weights_id}; decode with the same "
                         f"weights")
    return codec


def _reference_source(ref: str, stream: str, info: StreamInfo):
    """Open the source frames a stream was coded from: a file, or a folder holding them."""
    from codecflow.pipeline.sources import source_class  # noqa: PLC0415

    path = ref
    if os.path.isdir(ref):
        if info.views == 2:
            hits = sorted(glob.glob(os.path.join(glob.escape(ref), f"{glob.escape(stream)}_L.*")))
            if hits:
                cls = source_class("stereo_images")
                return cls(schema.parse(cls.Config, {"path": ref,
                                                     "pattern": f"{stream}_[LR].*"}, "reference"))
        hits = sorted(glob.glob(os.path.join(glob.escape(ref), f"{glob.escape(stream)}.*")))
        if not hits:
            raise CodecError(f"reference folder {ref}: no file named {stream}.* for stream "
                             f"{stream!r}")
        path = hits[0]
    ext = os.path.splitext(path)[1].lower()
    if ext == ".yuv":
        cls = source_class("yuv")
        cfg = {"path": path, "width": info.width, "height": info.height, "fps": info.fps,
               "matrix": info.matrix, "range": info.range}
    elif ext in IMAGE_EXTS:
        cls = source_class("images")
        cfg = {"path": path}
    else:
        cls = source_class("video")
        cfg = {"path": path}
    return cls(schema.parse(cls.Config, cfg, "reference"))


def _reference_frames(ref: str, stream: str, info: StreamInfo):
    src = _reference_source(ref, stream, info)
    for st in src.streams():
        for pictures in st.frames:  # one picture per view of each instant
            yield from pictures
        break


SIDE_INFO_CODECS = ("learned-stereo-si", "learned-intra")  # their payloads: learned-intra's


def side_info_codec(h: dict, path: str, device: str):
    """The learned-stereo-si codec that decodes the mono stream ``path`` (learned-stereo-si
    or learned-intra: the same payloads) and refines it with another stream."""
    from codecflow.codecs.learned.stereo_si import LearnedStereoSI  # noqa: PLC0415

    if h["codec"] not in SIDE_INFO_CODECS:
        raise CodecError(f"{path}: --side-info refines streams of {' or '.join(SIDE_INFO_CODECS)}"
                         f", this one is coded with {h['codec']}")
    if int(h.get("views", 1)) != 1:
        raise CodecError(f"{path}: --side-info takes a mono stream; this one holds stereo "
                         f"pairs (each view is refined with the other without it)")
    codec = LearnedStereoSI(q=h["q"], device=device)
    if h["codec"] == "learned-stereo-si":
        mine, ok = codec.weights_id, h.get("weights") == codec.weights_id
    else:
        mine, ok = codec.intra_id, codec.accepts_intra_weights(h.get("weights"))
    if h.get("weights") and not ok:
        raise CodecError(f"{path}: coded with {h['codec']} weights {h['weights']}, but the "
                         f"installed weights are {mine}; decode with the same weights")
    return codec


class SideStream:
    """The other camera's stream, decoded on demand: ``picture(frame index)`` -> uint8 RGB or
    None when the stream has no such frame (ended, cut short or damaged there)."""

    def __init__(self, path: str, device: str):
        from codecflow.codecs.colour import to_rgb  # noqa: PLC0415

        self.path, self._to_rgb = path, to_rgb
        self.reader = CflReader(path)
        self.info = header_stream_info(self.reader.header)
        if self.info.views != 1:
            self.reader.close()
            raise CodecError(f"--side-info {path}: expected a mono stream, it holds stereo "
                             f"pairs")
        self.codec = codec_for_header(self.reader.header, path, device)
        self.units = self.reader.units()
        self.pictures: dict = {}
        self.failed = ""

    def picture(self, frame_index: int):
        while frame_index not in self.pictures and self.units is not None:
            if self.pictures and max(self.pictures) > frame_index:
                break
            try:
                _, records = next(self.units)
                pics = decode_unit(self.codec, records, self.info, f"{self.path}: ")
            except StopIteration:
                self.units = None
                break
            except CodecflowError as e:  # damaged side stream: the rest decodes plainly
                self.failed, self.units = str(e), None
                break
            self.pictures = {fi: self._to_rgb(f, self.info.matrix, self.info.range)
                             for (fi, _), f in pics.items()}
        return self.pictures.get(frame_index)

    def close(self):
        self.reader.close()


def decode_file(path: str, output: str | None, reference: str | None = None,
                device: str = "cpu", recon_format: str = "auto", strict: bool = False,
                max_layer: int | None = None, side_info: str | None = None) -> dict:
    """Decode one .cfl. Returns a result map (frames, units, bytes, psnr..., status).
    ``side_info``: another camera's stream; each picture is refined with its picture of the
    same frame index (learned-stereo-si)."""
    side = None
    with CflReader(path) as reader:
        h = reader.header
        info = header_stream_info(h)
        stream = h.get("stream") or os.path.splitext(os.path.basename(path))[0]
        if side_info:
            codec = side_info_codec(h, path, device)
            side = SideStream(side_info, device)
            side_counts: dict = {}
        else:
            codec = codec_for_header(h, path, device)
        writer = None
        if output:
            out_dir, exact = _output_target(output)
            writer = ReconWriter(out_dir, stream, info, "yuv" if exact else recon_format, None,
                                 subdir="", exact_name=exact)
        refs = _reference_frames(reference, stream, info) if reference else None
        rows, frames, mismatches = [], 0, []
        pair_counts: dict = {}
        try:
            for unit_no, records in reader.units(max_layer):
                pics = decode_checked(codec, records, info, where=f"{path}: unit {unit_no}: ",
                                      strict=strict, mismatches=mismatches,
                                      max_layer=max_layer)
                if side is not None:
                    pics = _refine_with(codec, side, h["q"], info, side_counts)
                elif hasattr(codec, "side_info_status"):  # stereo pairs refined in the codec
                    for status in codec.side_info_status.values():
                        pair_counts[status] = pair_counts.get(status, 0) + 1
                first = records[0].frame_index
                if writer:
                    writer.write(first, pics, info.views)
                if refs is not None:
                    for pic in pics:
                        src = next(refs, None)
                        if src is None:
                            raise CodecError(f"reference {reference} has fewer frames than "
                                             f"{path}")
                        rows.append(frame_psnr(src, pic, info.matrix, info.range))
                frames += len(pics) // info.views
        except CodecflowError:
            if writer and frames == 0:  # nothing decoded: leave no empty output files behind
                writer.close()
                for p in writer.paths:
                    if os.path.isfile(p) and os.path.getsize(p) == 0:
                        os.remove(p)
            raise
        finally:
            if writer:
                writer.close()
            if side is not None:
                side.close()
        status = reader.status
    nbytes = os.path.getsize(path)
    # rate over the frames the file claims (its end record), not only those decoded: bytes of
    # a damaged tail must not make the decoded part look cheaper
    claimed = max(frames, int(status.claimed.get("frames", 0)))
    pixels = info.width * info.height * info.views * claimed
    result = {"file": path, "stream": stream, "codec": h["codec"], "q": h["q"],
              "frames": frames, "frames_claimed": claimed, "units": status.units,
              "bytes": nbytes, "bpp": 8.0 * nbytes / pixels if pixels else 0.0,
              "kbps": 8.0 * nbytes * info.fps / claimed / 1000.0 if claimed else 0.0,
              "complete": status.complete, "status": status.describe(),
              "rounding_mismatches": len(mismatches),
              "output": writer.paths if writer else []}
    result.update(mean_metrics(rows))
    if side is not None:
        result["side_info"] = {"file": side_info, "pictures": side_counts,
                               "side_stream_error": side.failed}
    elif pair_counts:
        result["side_info"] = {"file": "the other view", "pictures": pair_counts,
                               "side_stream_error": ""}
    return result


def _refine_with(codec, side: SideStream, q: int, info: StreamInfo, counts: dict) -> list:
    """The unit just decoded by ``codec`` (plain pictures, CRC-checked), each picture refined
    with the side stream's picture of the same frame index; ``counts``: status -> pictures."""
    from codecflow.codecs.colour import like  # noqa: PLC0415

    out = []
    for (fi, _), rgb in sorted(codec.plain_rgb.items()):
        other = side.picture(fi)
        refined, status = codec.side.refine(rgb, other, q, "auto")
        if other is None and side.failed:
            status = "side stream damaged"
        counts[status] = counts.get(status, 0) + 1
        out.append(like(refined, info.pix_fmt, info.matrix, info.range))
    return out


def _output_target(output: str):
    """-> (folder, exact file stem or None). OUT.yuv names a file, anything else a folder."""
    if output.endswith(".yuv"):
        folder = os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        return folder, os.path.basename(output)[:-4]
    os.makedirs(output, exist_ok=True)
    return output, None


def decode_paths(inp: str, output: str | None, reference: str | None, device: str = "cpu",
                 fmt: str = "auto", strict: bool = False, max_layer: int | None = None,
                 side_info: str | None = None) -> list:
    if side_info and os.path.isdir(inp):
        raise CodecError(f"--side-info: give one .cfl file to refine, not the folder {inp}")
    if side_info and not os.path.isfile(side_info):
        raise CodecError(f"--side-info {side_info}: no such file")
    if os.path.isdir(inp):
        files = sorted(glob.glob(os.path.join(glob.escape(inp), "*.cfl")))
        if not files:
            raise CodecError(f"{inp}: no .cfl files in this folder")
        if output and output.endswith(".yuv"):
            raise CodecError(f"--output {output}: decoding a folder needs an output folder")
    else:
        files = [inp]
    return [decode_file(f, output, reference, device, fmt, strict, max_layer, side_info)
            for f in files]
