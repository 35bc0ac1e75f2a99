"""Sub-commands of the ``coordgate`` CLI: one module each, each with ``register(subparsers)``."""
