"""Triton kernels, installed as ``autoprune.kernels``; each sits beside its torch reference ``*_ref``."""
