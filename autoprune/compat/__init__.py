"""Compatibility shims for third-party packages (each documented with its reason)."""
