"""The one error a config check raises, and the helper every section's rules use to raise it."""


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending key."""


def require(condition: bool, key: str, message: str) -> None:
    """Section validators call this so every message has the same shape."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")
