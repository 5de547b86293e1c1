"""Errors a user can act on. Each message names the problem: file, key, expected vs got."""


class CodecflowError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits non-zero."""

    exit_code = 2


class ConfigError(CodecflowError):
    """A config key is missing, unknown, or has a value outside what is allowed."""


class SourceError(CodecflowError):
    """A source cannot be opened or read (missing file/device, bad size, bad format)."""


class CodecError(CodecflowError):
    """A codec is unknown, misconfigured, or got a payload it cannot decode."""


class ContainerError(CodecflowError):
    """A .cfl file is not a codecflow bitstream, or has an unsupported version."""


class SymbolMismatch(CodecError):
    """The decoded symbols (quantised latents) differ from the encoder's: corrupt or
    incompatible stream. Never shown as a picture."""


class ReconstructionMismatch(CodecError):
    """The decoder's reconstruction does not match the CRC the encoder recorded."""


class PipelineError(CodecflowError):
    """A pipeline stage failed; the message names the stage."""
