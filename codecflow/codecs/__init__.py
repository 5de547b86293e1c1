"""Codecs: one interface for classical and learned codecs (see base.py)."""
