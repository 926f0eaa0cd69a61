"""Built-in tiny hybrid video VLM and procedural long-video QA (the embedded default).

``load()`` gives the shipped model; ``example()`` one embedded video with its question::

    from autoprune import demo
    model = demo.load()
    embeds, mask = demo.example(frames=64)
"""

from __future__ import annotations

from .model import DemoVideoVLM, load

__all__ = ["DemoVideoVLM", "load", "example"]


def example(frames: int = 64, *, split: str = "test", index: int = 0, model: DemoVideoVLM | None = None):
    """``(inputs_embeds (1, L, H), visual_mask (1, L))`` of video ``index`` of ``split`` with its question."""
    from . import video as V

    model = model or load()
    batch = V.make_split(split, 1, frames, index)
    return model.embed_batch(batch), DemoVideoVLM.visual_mask(1, frames, model.device)
