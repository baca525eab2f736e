"""authsvc: an authentication server that issues RS256 access tokens and rotating refresh tokens."""

__version__ = "0.1.0"
