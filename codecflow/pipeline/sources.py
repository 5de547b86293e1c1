"""The source types a config may name: where each class lives and how many views it gives.

The classes live in `codecflow.stages.sources` and are imported only when asked for
(`source_class`), so the config layer knows the types without importing any source module.
"""

from __future__ import annotations

import importlib

from codecflow.errors import ConfigError

# type name -> ("module:Class", views per instant)
SOURCE_TYPES = {
    "yuv": ("codecflow.stages.sources.yuv:YuvSource", 1),
    "video": ("codecflow.stages.sources.video:VideoFileSource", 1),
    "camera": ("codecflow.stages.sources.camera:CameraSource", 1),
    "stereo_rig": ("codecflow.stages.sources.stereo_rig:StereoRigSource", 2),
    "images": ("codecflow.stages.sources.images:ImageFolderSource", 1),
    "stereo_images": ("codecflow.stages.sources.images:StereoImageFolderSource", 2),
    "synthetic_video": ("codecflow.stages.sources.synthetic:SyntheticVideoSource", 1),
    "synthetic_stereo": ("codecflow.stages.sources.synthetic:SyntheticStereoSource", 2),
}


def _check(type_name: str) -> None:
    if type_name not in SOURCE_TYPES:
        raise ConfigError(f"source.type: must be one of {', '.join(sorted(SOURCE_TYPES))}; "
                          f"got {type_name!r}")


def source_views(type_name: str) -> int:
    _check(type_name)
    return SOURCE_TYPES[type_name][1]


def source_class(type_name: str):
    _check(type_name)
    module, cls = SOURCE_TYPES[type_name][0].split(":")
    return getattr(importlib.import_module(module), cls)
