"""Brains (conversation sessions) and voices (text to speech)."""

from .base import Brain, BrainError, BrainEvents, SessionOptions, Turn, Voice
from .echo import EchoBrain

__all__ = ["Brain", "BrainError", "BrainEvents", "EchoBrain", "SessionOptions", "Turn", "Voice"]
