"""The transport benchmark: tokenwire SSE and WebSocket against four common baselines.

Run it from the repository root with ``tokenwire bench`` (``--quick`` for the 2-minute profile,
``--help`` for the options), or ``PYTHONPATH=benchmarks python -m transport``.

Servers under test (:mod:`transport.servers`), each alone in its own uvicorn process (uvloop,
httptools, the same flags for all) on a free loopback port: tokenwire's SSE route, tokenwire's
WebSocket route, and baselines written the way most projects do it: (a) Starlette
``StreamingResponse`` yielding ``data: {token}\\n\\n``, (b) sse-starlette ``EventSourceResponse``,
(c) a Starlette WebSocket with one ``send_text`` per token, (d) FastAPI's native SSE
(``fastapi.sse.EventSourceResponse``), a pydantic model per token, then its usage.

Fairness: every server streams from the same token source (:mod:`transport.source`): the
scripted provider's text on an absolute schedule that the client sends with the request
(``t0`` = the client's ``time.monotonic()``, one clock for all processes on Linux). The client
therefore knows when each token was due and measures *added* latency (parsed by the client -
due) with no side channel and no extra work on the server, and the server's own lateness (a busy
event loop waking the provider late) counts against it. One stream per connection for every
server; the same JSON request body for all (tokenwire's protocol, the baselines read the same
field).

The load generator (:mod:`transport.loadgen`) is a separate uvloop process on raw sockets,
cheaper per token than any server (printed for every run). Metrics per server: added TTFT and
inter-token latency (p50, p99, p99.9), server and client CPU microseconds per delivered token,
the largest stepped-ramp concurrency whose added inter-token p99 stays under 50 ms, RSS per idle
and per active connection, and tokens delivered per server CPU-second when the provider outpaces
the client. Then the stream semantics: cancel latency (client cancel -> the server's token
generator stopped; every server reports its stops on ``GET /active``, and tokenwire's explicit
cancel is also timed to ``stream.end``), slow-consumer isolation (healthy streams' inter-token
p99 with and without stalled consumers, RSS per stalled consumer) and, for tokenwire, the resume
gap with lost and duplicated tokens. Results (:mod:`transport.report`, :mod:`transport.plots`):
JSON, Markdown tables, console tables with each target's pass/fail, PNG plots; by default in
``$XDG_DATA_HOME/tokenwire/bench/`` (``~/.local/share/...``), outside the source tree.

Options beyond the profile (off by default; the results then carry ``options``):
``--resume-log redis`` runs the resume phase on two tokenwire processes that share a Redis
stream log (a redis-server of the run's own): each resume goes to either, the gap is reported
per server (``gap_ms_by_server``), and so are the Redis commands per delivered token.
``--cancel-stall`` adds a cancel kind ``stall``: tokenwire streams dropped after
``stream.start`` while their first token is still far off. Overflow policies are compared with
``--tokenwire-env TOKENWIRE_OVERFLOW=coalesce`` (or ``disconnect``) on the isolation phase.

Extending it: add a phase function to :data:`transport.loadgen.PHASES`, its spec to
:meth:`transport.harness.Profile.phases` (with ``needs`` if only servers with that feature
have it), and its numbers to :func:`transport.report.row`.
"""
