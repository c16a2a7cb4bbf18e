"""Phone calls into the same rooms: carriers' media streams as room transports.

:mod:`.g711` holds the telephone codecs (mu-law, A-law); :mod:`.twilio` the
Twilio Media Streams bridge (``/telephony/twilio``, ``POST /telephony/twilio/voice``).
"""

from __future__ import annotations

from .twilio import STREAM_PATH, VOICE_PATH, TwilioBridge, TwilioTransport

__all__ = ["STREAM_PATH", "VOICE_PATH", "TwilioBridge", "TwilioTransport"]
