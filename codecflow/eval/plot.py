"""RD plots (matplotlib, Agg backend) and published anchor curves.

Published curves are CompressAI-style result files (one per codec)::

    {"name": "WebP", "description": "...", "meta": {...},
     "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...], ...}}

`load_published` reads every ``*.json`` of a folder into ``{"published:<file stem>": curve}``
(e.g. ``published:webp``, ``published:bpg_444_x265_ycbcr``), each curve sorted by rate.
"""

from __future__ import annotations

import json
from pathlib import Path

PUBLISHED_PREFIX = "published:"
_METRIC_KEYS = {"psnr_rgb": ("psnr-rgb", "psnr_rgb", "psnr"),
                "psnr_yuv": ("psnr-yuv", "psnr_yuv"),
                "psnr_y": ("psnr-y", "psnr_y")}


def load_published(folder, metric: str = "psnr_rgb") -> dict:
    """-> {"published:<stem>": {"name", "label", "bpp": [...], metric: [...], "path"}}."""
    out = {}
    folder = Path(folder)
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        res = data.get("results") if isinstance(data, dict) else None
        if not isinstance(res, dict) or "bpp" not in res:
            continue
        key = next((k for k in _METRIC_KEYS.get(metric, (metric,)) if k in res), None)
        if key is None:
            continue
        pts = sorted(zip(res["bpp"], res[key]))
        if len(pts) < 2:
            continue
        label = str(data.get("name") or f.stem)
        out[PUBLISHED_PREFIX + f.stem] = {"name": PUBLISHED_PREFIX + f.stem, "label": label,
                                          "bpp": [float(p[0]) for p in pts],
                                          metric: [float(p[1]) for p in pts], "path": str(f)}
    return out


def plot_rd(curves: dict, out_png, published: dict | None = None, metric: str = "psnr_rgb",
            title: str = "", max_bpp: float | None = None) -> str:
    """curves: {label: (bpp list, metric list)} for our sweeps; published: `load_published`.

    Ours are solid lines with markers, published curves thin dashed lines. Returns out_png.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    top = 0.0
    for label, (bpp, val) in curves.items():
        pts = sorted(zip(bpp, val))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", lw=1.8, ms=4, label=label)
        top = max([top] + [p[0] for p in pts])
    cmap = plt.get_cmap("tab20b")
    for i, cur in enumerate((published or {}).values()):
        ax.plot(cur["bpp"], cur[metric], ("--", ":", "-.")[i % 3], lw=1.0, alpha=0.8,
                color=cmap(i % 20), label=f"{cur['label']} (published)")
    limit = max_bpp if max_bpp else (max(top * 1.15, 0.25) if top else None)
    if limit:
        ax.set_xlim(0, limit)
        ys = [v for bpp, vals in curves.values() for b, v in zip(bpp, vals) if b <= limit]
        ys += [v for cur in (published or {}).values()
               for b, v in zip(cur["bpp"], cur[metric]) if b <= limit]
        if ys:
            ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel({"psnr_rgb": "PSNR-RGB [dB]", "psnr_yuv": "PSNR-YUV (6Y+U+V)/8 [dB]",
                   "psnr_y": "PSNR-Y [dB]"}.get(metric, metric))
    ax.set_title(title or "Rate-distortion")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out_png = str(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
