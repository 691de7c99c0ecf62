"""Opt-in speed: arrangements of the reference ops that compute the same numbers faster."""
