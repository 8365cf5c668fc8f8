"""User-facing errors. The CLI prints these as one message and exits non-zero (no traceback)."""


class VidtuneError(Exception):
    """An error caused by user input (recipe, prompt, path, checkpoint) that the user can act on."""


class ConfigError(VidtuneError):
    """A recipe or override is malformed: unknown key, wrong type or invalid value."""


class DataError(VidtuneError):
    """A training dataset is unusable: a manifest line, video file or caption is missing, malformed or undecodable."""
