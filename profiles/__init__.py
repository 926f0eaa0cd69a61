"""Data package ``autoprune.profiles``: ``gpus/*.json`` (spec sheets with sources) and
``measured/<gpu-id>/<shape>.json`` (tables written by ``autoprune profile``).

A regular package (not a namespace one) so that ``importlib.resources`` finds it both
from a wheel and from an editable install of the source tree.
"""
