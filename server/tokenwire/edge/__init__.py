"""The edge, beside the stream core: who may enter (:mod:`.security`, :mod:`.keys`), how much
(:mod:`.limits`), what is counted (:mod:`.metrics`), the one error writer
(:mod:`.responses`), and the wiring of them all into an app (:mod:`.guards`).

The core (``tokenwire.streams``, ``tokenwire.transports``) imports nothing from here; the edge
watches it through the observer interfaces of :mod:`tokenwire.streams.observe`.
"""
