"""voice-trio: a realtime voice-agent server for Vietnamese-speaking products, on Trio."""

from .config import ConfigError, Settings
from .security import mint_token

__all__ = ["ConfigError", "Settings", "mint_token", "__version__"]

__version__ = "0.1.0"
