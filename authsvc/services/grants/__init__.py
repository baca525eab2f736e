"""The grants of /oauth/token that live in a module of their own, one grant per file."""
