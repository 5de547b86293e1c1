"""Sources: raw YUV, video files (PyAV), cameras, stereo rigs, image folders, synthetic scenes.
The types a config may name are listed in `codecflow.pipeline.sources`."""
from codecflow.stages.sources.base import Source, SourceStream

__all__ = ["Source", "SourceStream"]
