"""File input and output shared by every module: atomic writes that honour the umask, JSON and
YAML reads whose errors name the file, and :func:`data_dir`, the one place that finds the data
shipped inside the package (GPU specs, measured tables, search spaces, study specs)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["write_bytes", "write_text", "write_json", "read_json", "read_yaml_mapping", "data_dir", "find_data_file",
           "DATA_KINDS"]

#: The folders of ``autoprune/data/``.
DATA_KINDS = ("profiles", "search_spaces", "studies")


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the whole new one.

    The file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` less the
    umask): ``tempfile.mkstemp`` alone would leave it readable by its owner only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        # Leave no temp file behind whatever went wrong (including KeyboardInterrupt).
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    # allow_nan=False: a NaN in an exported file is a bug upstream, not a value to persist.
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=False, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; unreadable or invalid files raise ConfigError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None


def read_yaml_mapping(path: str | os.PathLike, what: str) -> dict:
    """Parse a YAML file that must hold a mapping; errors name the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} file must hold a mapping, got {type(data).__name__}")
    return data


def data_dir(kind: str) -> Path:
    """Folder of the data shipped with the package: ``autoprune/data/<kind>`` (:data:`DATA_KINDS`)."""
    if kind not in DATA_KINDS:
        raise ConfigError(f"unknown data kind {kind!r}; known: {list(DATA_KINDS)}")
    return Path(__file__).resolve().parent / "data" / kind


def find_data_file(name_or_path: str | os.PathLike, kind: str, what: str, suffix: str = ".yaml") -> Path:
    """A shipped file by name (``progressive`` → ``data/search_spaces/progressive.yaml``) or a path.

    Something that looks like a path (has the suffix, a separator, or exists) is taken as one.
    ConfigError names the missing file, or lists the shipped names.
    """
    p = Path(name_or_path)
    if p.suffix in (suffix, ".yml") or p.exists() or os.sep in str(name_or_path):
        if not p.is_file():
            raise ConfigError(f"{what} file {str(p)!r} does not exist")
        return p
    cand = data_dir(kind) / f"{name_or_path}{suffix}"
    if cand.is_file():
        return cand
    known = sorted(q.stem for q in data_dir(kind).glob(f"*{suffix}"))
    raise ConfigError(f"unknown {what} {str(name_or_path)!r}; known: {known} (or give a path to a {suffix} file)")
