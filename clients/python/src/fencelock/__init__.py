"""fencelock: hold a fencelock lock correctly from Python.

>>> import fencelock
>>> client = fencelock.Client("http://localhost:12345")
>>> with client.lock("nightly-backup", ttl="2m", wait="5m") as lease:  # doctest: +SKIP
...     write_with_fence(lease.fence)
...     lease.check()

The lease heartbeats in the background, says when it is lost (``lease.lost``,
``on_lost``, ``lease.check()``) or when an operator asks for it back
(``lease.release_requested``, ``lease.check()``), and is released when the block is
left.
"""

from ._async import AsyncClient, AsyncLease
from ._errors import (
    FencelockError,
    Forbidden,
    InvalidRequest,
    LockDisabled,
    LockHeld,
    LockLost,
    NotHolder,
    RateLimited,
    ReleaseRequested,
    Unauthorized,
    Unavailable,
)
from ._protocol import Change
from ._sync import Client, Lease

__all__ = [
    "AsyncClient",
    "AsyncLease",
    "Change",
    "Client",
    "FencelockError",
    "Forbidden",
    "InvalidRequest",
    "Lease",
    "LockDisabled",
    "LockHeld",
    "LockLost",
    "NotHolder",
    "RateLimited",
    "ReleaseRequested",
    "Unauthorized",
    "Unavailable",
]
