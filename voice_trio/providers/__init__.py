"""Brains (conversation sessions) and voices (text to speech)."""

from .base import Brain, BrainEvents, ProviderError, SessionOptions, Turn, Voice
from .echo import EchoBrain

__all__ = ["Brain", "ProviderError", "BrainEvents", "EchoBrain", "SessionOptions", "Turn", "Voice"]
