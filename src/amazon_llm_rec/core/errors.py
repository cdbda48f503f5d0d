"""Errors raised on bad input, each naming the file, line, filter or parameter at fault."""


class AmazonLLMRecError(Exception):
    """Base class of the project's own errors."""


class RawDataError(AmazonLLMRecError):
    """A raw review or metadata file is missing, unreadable or malformed."""


class EmptyFilterError(AmazonLLMRecError):
    """A processing filter left no rows."""


class ConfigError(AmazonLLMRecError):
    """A parameter has a value the project cannot use."""


class MissingInputError(AmazonLLMRecError):
    """A pipeline's input dataset was not produced yet."""
