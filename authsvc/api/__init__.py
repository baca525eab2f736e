"""HTTP only: parse, make one service call, answer."""
