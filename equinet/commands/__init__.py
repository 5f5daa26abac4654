"""Subcommands of the ``equinet`` command line; each module registers one with ``register``."""
