"""Command groups of the `cosim` command line; each module has `register(subparsers)`."""
