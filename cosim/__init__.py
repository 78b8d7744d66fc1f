"""The co-simulation engine: messages, bus, step protocol, backends, records, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gridedge-cosim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
