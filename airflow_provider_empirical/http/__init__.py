"""The HTTP layer: one I/O-free protocol, the endpoints, two thin drivers, the operations.

- `protocol`: what to send (`Call`), how to read any answer (`parse_response` on plain status,
  headers and bytes; `BodyReader`), when to retry (`RetryPolicy`), errors, proxies and CAs.
- `endpoints`: every method and path, written once.
- `operations`: each API operation as a generator of calls (what to send, how to read the
  answer), driven alike by the sync and the async faces of the hook.
- `sync`: `EmpiricalClient`, the protocol over httpx (workers: operator, sensor poke).
- `aio`: `AsyncEmpiricalClient` and `shared_async_client`, the protocol over one shared aiohttp
  session per event loop (triggerer). aiohttp is imported only when a session is made.

Importing this package imports none of them.
"""
