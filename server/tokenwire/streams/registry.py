"""StreamRegistry: the live generations of one server process, by stream id."""

from __future__ import annotations

import asyncio
import secrets

from tokenwire.errors import NotFound
from tokenwire.protocol.requests import GenerateParams
from tokenwire.providers.base import Provider
from tokenwire.settings import DisconnectPolicy
from tokenwire.streams.generation import Generation


def new_stream_id() -> str:
    """An opaque, unguessable stream id (``str_`` + 22 URL-safe characters)."""
    return "str_" + secrets.token_urlsafe(16)


class StreamRegistry:
    """Creates, finds, cancels and forgets generations. A generation leaves the registry as
    soon as its ``stream.end`` is published."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._live: dict[str, Generation] = {}

    def __len__(self) -> int:
        return len(self._live)

    def create(
        self,
        params: GenerateParams,
        *,
        transport: str,
        request_id: str | None = None,
        on_disconnect: DisconnectPolicy = DisconnectPolicy.CANCEL,
    ) -> Generation:
        """A new generation, registered but not started (subscribe first, then ``start()``).

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
            on_disconnect=on_disconnect,
            on_ended=self._forget,
        )
        self._live[generation.stream_id] = generation
        return generation

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
