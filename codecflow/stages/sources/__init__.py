"""Sources: raw YUV, video files (PyAV), cameras, stereo rigs, image folders, synthetic scenes."""
from codecflow.stages.sources.base import SOURCE_TYPES, Source, SourceStream, source_class

__all__ = ["SOURCE_TYPES", "Source", "SourceStream", "source_class"]
