"""Which GPU a worker uses: ``--devices 0,1`` / ``--device cuda:K`` parsed once, and the process
pinned to it through ``CUDA_VISIBLE_DEVICES`` before CUDA is initialised (the model source's
``cuda`` then means that GPU; nothing else needs to know)."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["parse_devices", "pin_device"]


def parse_devices(text: str | Sequence | None) -> tuple[str, ...]:
    """``"0,1"`` → ``("0", "1")``: GPU indices as ``CUDA_VISIBLE_DEVICES`` takes them (``cuda:K`` and
    ``K`` both accepted; ``cpu`` too). ValueError naming the bad entry."""
    if text is None:
        return ()
    items = [x.strip() for x in (text.split(",") if isinstance(text, str) else text)]
    out = []
    for x in items:
        k = x[5:] if x.startswith("cuda:") else x
        if k != "cpu" and not k.isdigit():
            raise ValueError(f"device {x!r} is not a GPU index (0, 1, cuda:2) or cpu")
        out.append(k)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"devices {text!r} must name each device once")
    return tuple(out)


def pin_device(device: str | None) -> None:
    """Make ``device`` (``"2"``/``cuda:2``, or ``cpu``) the only one this process sees: set before
    CUDA is initialised, the model source's ``cuda`` then means that GPU."""
    if device is None:
        return
    k = parse_devices([device])[0]
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if k == "cpu" else k
