"""codecflow: a streaming daemon for learned and classical video / stereo codecs."""

__version__ = "0.1.0"
