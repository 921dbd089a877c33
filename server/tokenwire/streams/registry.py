"""StreamRegistry: the live generations of one server process, by stream id."""

from __future__ import annotations

import asyncio
import secrets

from tokenwire.errors import NotFound
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Provider
from tokenwire.settings import DisconnectPolicy, Settings
from tokenwire.streams.generation import Generation
from tokenwire.streams.subscription import Subscription


def new_stream_id() -> str:
    """An opaque, unguessable stream id (``str_`` + 22 URL-safe characters)."""
    return "str_" + secrets.token_urlsafe(16)


class StreamRegistry:
    """Creates, finds, cancels and forgets generations, with the limits and policies of
    ``settings``. A generation leaves the registry as soon as its ``stream.end`` is published."""

    def __init__(self, provider: Provider, settings: Settings | None = None) -> None:
        self.provider = provider
        self.settings = settings or Settings()
        self._live: dict[str, Generation] = {}

    def __len__(self) -> int:
        return len(self._live)

    def create(
        self,
        params: GenerateParams,
        *,
        transport: str,
        request_id: str | None = None,
    ) -> Generation:
        """A new generation, registered but not started (subscribe first, then ``start()``).
        Its disconnect policy is the request's ``on_disconnect``, else the server's.

        Raises:
            NotFound: the provider does not serve ``params.model``.
        """
        model = self.provider.resolve_model(params.model)
        generation = Generation(
            new_stream_id(),
            self.provider,
            params,
            model=model,
            transport=transport,
            request_id=request_id,
            on_disconnect=DisconnectPolicy(params.on_disconnect or self.settings.on_disconnect),
            detach_grace=self.settings.detach_grace,
            first_token_timeout=self.settings.first_token_timeout,
            max_duration=self.settings.max_stream_duration,
            on_ended=self._forget,
        )
        self._live[generation.stream_id] = generation
        return generation

    def subscribe(self, generation: Generation) -> Subscription:
        """Attach a consumer with the server's queue size and overflow policy."""
        return generation.subscribe(
            maxsize=self.settings.queue_maxsize,
            overflow=self.settings.overflow,
            evict_after=self.settings.slow_consumer_timeout,
        )

    def get(self, stream_id: str) -> Generation:
        """The live generation ``stream_id``. Raises :class:`NotFound`."""
        try:
            return self._live[stream_id]
        except KeyError:
            raise NotFound(f"no live stream {stream_id!r}") from None

    def cancel(self, stream_id: str) -> Generation:
        """Cancel a live generation (see :meth:`Generation.cancel`). Raises :class:`NotFound`."""
        generation = self.get(stream_id)
        generation.cancel()
        return generation

    async def aclose(self) -> None:
        """Cancel every live generation and wait for their ``stream.end``."""
        generations = list(self._live.values())
        for generation in generations:
            generation.cancel()
        await asyncio.gather(*(generation.wait() for generation in generations))

    def _forget(self, generation: Generation) -> None:
        self._live.pop(generation.stream_id, None)
