"""Pipeline stages: sources, framing into units, encode, decode, sinks."""
