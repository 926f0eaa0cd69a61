"""One module per CLI command: ``register(subparsers)`` adds its parser and sets ``func``.

Modules here import only argparse-level things at import time; the work's heavy
imports happen inside the command function.
"""
