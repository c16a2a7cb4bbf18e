"""voice-trio: a realtime voice-agent server for Vietnamese-speaking products, on Trio."""

from .config import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "__version__"]

__version__ = "0.1.0"
