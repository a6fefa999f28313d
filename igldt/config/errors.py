"""The one error type of the config package."""


class ConfigError(ValueError):
    """A preset, override or saved config that does not fit the schema; one line naming the key."""
