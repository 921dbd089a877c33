"""The stream layer shared by every transport: Generation, Subscription, StreamRegistry."""

from tokenwire.streams.generation import Generation, GenerationState
from tokenwire.streams.registry import StreamRegistry
from tokenwire.streams.subscription import Subscription, ends_stream

__all__ = ["Generation", "GenerationState", "StreamRegistry", "Subscription", "ends_stream"]
