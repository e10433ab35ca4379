"""TOML loading for run and study configurations.

A config file may name a parent with ``extends = "other.toml"`` (relative to the file, or the name of a
config shipped in :mod:`study.configs` / a preset in :mod:`study.presets`), so that variants are small
diffs. Command-line overrides ``key.sub=value`` are parsed as TOML values (bare words become strings).
Everything is validated strictly before any work starts.
"""
from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import tomli_w

from trainables.config import ConfigError, TrainConfig, from_dict, merge, replace_path, to_dict

__all__ = ["load_toml", "parse_overrides", "load_train_config", "dump_toml", "resolve_named_file",
           "shipped_names"]


def shipped_names(package: str) -> list[str]:
    """Names of the TOML files shipped in ``study.<package>`` (``configs`` or ``presets``)."""
    folder = resources.files(f"study.{package}")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def resolve_named_file(name_or_path: str | Path, package: str, relative_to: Path | None = None) -> Path:
    """A path to a TOML file, or the name of one shipped in ``study.<package>``."""
    candidate = Path(name_or_path)
    if relative_to is not None and not candidate.is_absolute():
        rel = relative_to / candidate
        if rel.is_file():
            return rel
    if candidate.is_file():
        return candidate
    if candidate.suffix != ".toml" and "/" not in str(name_or_path):
        shipped = resources.files(f"study.{package}") / f"{name_or_path}.toml"
        if shipped.is_file():
            return Path(str(shipped))
    names = ", ".join(shipped_names(package)) or "none"
    raise FileNotFoundError(f"{name_or_path}: no such file, and not a shipped {package[:-1]} name (shipped: {names})")


class TomlSyntaxError(ConfigError):
    """A file that is not TOML, as editors and compilers say it: ``FILE:LINE:COLUMN: not valid TOML: why``
    (ConfigError's "key = value is not valid" form read ``<file> = ''`` here)."""

    def __init__(self, source: str, err: Exception | str):
        text = str(err)
        where = re.search(r"\(at line (\d+), column (\d+)\)$", text)
        why = text[:where.start()].strip() if where else text
        at = f":{where.group(1)}:{where.group(2)}" if where else ""
        super().__init__(source, "<file>", "", f"valid TOML ({text})")
        self.args = (f"{source}{at}: not valid TOML: {why}",)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return _toml_error, (self.source, self.allowed[len("valid TOML ("):-1])


def _toml_error(source: str, text: str) -> "TomlSyntaxError":
    return TomlSyntaxError(source, text)


def load_toml(path: str | Path, package: str = "configs", _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a TOML file, following ``extends`` chains (cycles are refused)."""
    path = resolve_named_file(path, package)
    real = path.resolve()
    if real in _seen:
        raise ConfigError(str(path), "extends", str(path), "a file that does not extend itself (cycle)")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise TomlSyntaxError(str(path), err) from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), "<file>", f"byte {err.object[err.start:err.start + 1]!r} at offset {err.start}",
                          "UTF-8 text (TOML files are UTF-8; re-save the file as UTF-8)") from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(str(path), "extends", parent, "a file path or a shipped config name")
    try:
        parent_path = resolve_named_file(parent, package, relative_to=path.parent)
    except FileNotFoundError as err:
        raise ConfigError(str(path), "extends", parent, str(err)) from None
    return merge(load_toml(parent_path, package, _seen + (real,)), data)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "model.name=deeplabv2_tiny"]`` → nested dict."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("<command line>", item, item, "overrides of the form key.sub=value")
        out = replace_path(out, key.strip(), _parse_value(value.strip()))
    return out


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a run config (file or shipped name) with command-line overrides, strictly validated."""
    data = load_toml(path)
    source = str(path)
    if overrides:
        data = merge(data, parse_overrides(overrides))
        source = f"{path} (with overrides {' '.join(overrides)})"
    return from_dict(TrainConfig, data, source=source)


def dump_toml(cfg_or_dict: Any) -> str:
    data = cfg_or_dict if isinstance(cfg_or_dict, Mapping) else to_dict(cfg_or_dict)
    return tomli_w.dumps(data)
