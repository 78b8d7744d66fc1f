"""Errors raised by the profile generator. Each names the file, key, column or row at fault."""

from __future__ import annotations


class ProfileError(ValueError):
    """Bad input to the profile generator: a config key, a CSV cell, a model file."""
