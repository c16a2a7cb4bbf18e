"""The demo: a Vietnamese receptionist for a clinic, built on the agent graph API.

It is the default graph of ``voice-trio serve`` (the local and Azure brains), and the
worked example of :mod:`voice_trio.agent`: a graph with nodes, rules and tools over a
SQLite file. A product brings its own graph the same way and hands it to the app.

- :mod:`.receptionist`: :func:`build_receptionist` and the graph's main node.
- :mod:`.booking` and :mod:`.lookup`: booking, and reading back or cancelling.
- :mod:`.tools`: the four tools both brains call, and the privacy rules they enforce.
- :mod:`.store`: the appointments in SQLite; :mod:`.clinic`: opening hours and the clock.
- :mod:`.wording`: what it says and the phrases it listens for.
"""

from .clinic import VIETNAM, Clinic, Clock, vietnam_now
from .receptionist import build_receptionist
from .store import Appointment, AppointmentStore
from .tools import MAX_CODE_TRIES
from .wording import NO_MATCH, TOO_MANY_TRIES

__all__ = [
    "MAX_CODE_TRIES",
    "NO_MATCH",
    "TOO_MANY_TRIES",
    "VIETNAM",
    "Appointment",
    "AppointmentStore",
    "Clinic",
    "Clock",
    "build_receptionist",
    "vietnam_now",
]
