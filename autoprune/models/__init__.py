"""The registry of model sources: a name → the :class:`~autoprune.interfaces.ModelSource` that
builds a study's evaluator and latency sources.

A source registers itself with :func:`register_model_source` when its module is imported. Names
resolve, in order, to a registered source; a source shipped with autoprune (its module is
imported on first use: ``demo``, ``synthetic``); a source another distribution declares under
the entry-point group ``autoprune.model_sources``; or ``module:attribute`` (a source object, a
class, or a factory called with no arguments). The search knows sources only by name.

A checkpoint given on the command line (``--model ./ckpt`` or ``--model org/name``) is the ``hf``
source with option ``path``: :func:`resolve_model_argument` maps a ``--model`` value that is no
source name and no ``module:attribute`` but an existing directory, a path (``./``, ``/``, ``~``),
or an ``org/name`` repo id onto it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from difflib import get_close_matches

from ..errors import ConfigError
from ..interfaces import ModelSource, SourceRequest

__all__ = ["register_model_source", "get_model_source", "available_model_sources", "check_request",
           "resolve_model_argument", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "autoprune.model_sources"

# Sources shipped with autoprune, imported when first named (their modules register them).
_SHIPPED = {"demo": "autoprune.demo.source", "synthetic": "autoprune.models.synthetic", "hf": "autoprune.models.hf"}

_REGISTRY: dict[str, ModelSource] = {}


def register_model_source(name: str) -> Callable:
    """Class decorator: instantiate the class (no arguments) and register it under ``name``."""

    def deco(cls):
        source = cls()
        if not isinstance(source, ModelSource):
            raise TypeError(f"{cls.__name__} is not a ModelSource (needs name, options, check and build)")
        if source.name != name:
            raise TypeError(f"{cls.__name__}.name is {source.name!r}, registered as {name!r}")
        _REGISTRY[name] = source
        return cls

    return deco


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_model_sources() -> list[str]:
    """Names that resolve without a ``module:attribute`` path."""
    return sorted(set(_REGISTRY) | set(_SHIPPED) | set(_entry_points()))


def _from_object(obj, where: str) -> ModelSource:
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, ModelSource)):
        obj = obj()
    if not isinstance(obj, ModelSource):
        raise ConfigError(f"{where} is not a model source (needs name, options, check(request) and build(request))")
    return obj


def get_model_source(name: str) -> ModelSource:
    """The source called ``name`` (see the module docstring); ConfigError lists the known ones."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a model source name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _SHIPPED:
        importlib.import_module(_SHIPPED[name])
        return _REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        src = _from_object(eps[name].load(), f"entry point {name!r} ({eps[name].value})")
        _REGISTRY[name] = src
        return src
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot import the model source {name!r}: {e}") from None
        return _from_object(obj, name)
    known = available_model_sources()
    close = get_close_matches(name, known, n=2)
    raise ConfigError(f"unknown model {name!r}; known: {known}" + (f" (did you mean {close}?)" if close else "")
                      + "; or give module:attribute of a model source of your own")


def check_request(source: ModelSource, request: SourceRequest) -> None:
    """Refuse options the source does not take (naming them and the ones it does), then let it check the rest."""
    unknown = sorted(set(request.options) - set(source.options))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for model {source.name!r}; known: {sorted(source.options)}")
    source.check(request)


def resolve_model_argument(model: str | None, options: dict | None = None) -> tuple[str | None, dict | None, str | None]:
    """``(source name, options, label)`` for a ``--model`` value (see the module docstring).

    A source name or ``module:attribute`` passes unchanged (label None); a checkpoint becomes
    ``("hf", {**options, "path": model}, <the checkpoint's folder name>)``, the label naming the study.
    """
    from pathlib import Path

    if model is None or model in _REGISTRY or model in _SHIPPED or ":" in model or model in _entry_points():
        return model, options, None
    p = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or p.is_dir() or model.count("/") == 1
    if not looks_like_path:
        return model, options, None
    if options and "path" in options and options["path"] != model:
        raise ConfigError(f"--model {model} and --model-option path={options['path']} name two checkpoints")
    label = p.resolve().name if p.exists() else model.rstrip("/").split("/")[-1]
    return "hf", {**(options or {}), "path": model}, label
