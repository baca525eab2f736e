"""What the store raises when the database is away or slow, for errors.py to answer 503."""

from __future__ import annotations

from typing import Final

from sqlalchemy.exc import OperationalError

# SQLSTATEs that mean "slow or away, retry later" (503, not our bug): connection exceptions (08),
# insufficient resources (53), operator intervention incl. statement timeout (57), lock timeout
# (55P03), serialization failure and deadlock (40001, 40P01), idle-in-transaction timeout (25P03).
TRANSIENT_SQLSTATE: Final = ("08", "53", "57", "55P03", "40001", "40P01", "25P03")


class DatabaseUnavailable(OperationalError):
    """Raised by code that talks to the driver directly (store/fastlane.py), so that it gets
    the same 503 as the engine's own OperationalError."""
