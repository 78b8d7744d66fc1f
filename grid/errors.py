"""Errors raised by the grid package. Each names the file, bus, element or scenario at fault."""

from __future__ import annotations


class GridError(Exception):
    """Base class for every error raised by `grid`."""


class FeederError(GridError):
    """A feeder could not be loaded: a missing or malformed DSS file, no source, an
    unsupported element."""


class InjectionError(GridError, ValueError):
    """Bad power-flow input: unknown bus or phase, wrong shape, NaN or infinite values."""
