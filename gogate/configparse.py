"""How a setting's declaration becomes a parser: :class:`Field`, and the ``.env`` file reader.

:mod:`gogate.config` declares the settings as the fields of one ``msgspec.Struct`` with their
bounds and help (``msgspec.Meta``); :func:`fields_of` reads that declaration back, once, into
one :class:`Field` per setting, which knows its variable, its flag, its default as help texts
write it, and how to turn a raw string into the typed value (or say what is wrong with it).

Besides msgspec's bounds (``ge``, ``gt``, ``le``, ``pattern``), ``Meta.extra`` may say:

- ``"expect"``: what ``Meta.pattern`` asks for, in words;
- ``"rstrip"``: characters taken off the end of the value (a URL's trailing slash);
- ``"choices"``: one of these words, case-insensitive (for a list: each item);
- ``"file"``: ``"readable"`` (a file that can be read) or ``"pem"`` (a readable PEM file);
- ``"network"``: an IP network in CIDR notation (a bare address is a network of one);
- ``"auto"``: the word ``auto`` stands for this stored value, which cannot be given as a number;
- ``"empty"``: what an empty value means, for help texts (otherwise "empty");
- ``"required"``: needed outside development mode;
- ``"variable"``: ``False`` for a setting that only a flag of its own sets.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from gogate.errors import ConfigError

__all__ = ["Field", "fields_of", "parse_env_file"]

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class Field(msgspec.Struct, frozen=True):
    """One setting as the sources see it, read from its declaration."""

    name: str  # the attribute of the settings struct
    env: str  # the environment variable
    flag: str  # the command-line flag
    kind: Any  # the msgspec.inspect type: IntType, FloatType, StrType, BoolType, VarTupleType
    default: Any
    help: str
    extra: dict[str, Any]

    @property
    def shown_default(self) -> str:
        """The default as help texts and the README write it."""
        if self.extra.get("required"):
            return "required"
        if self.default in ("", ()):
            return str(self.extra.get("empty", "empty"))
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def parse(self, raw: str) -> Any:
        """The typed value of ``raw``, or ValueError saying what is wrong with it."""
        text = raw.strip()
        if isinstance(self.kind, mi.VarTupleType):
            items = tuple(part.strip() for part in text.split(",") if part.strip())
            if any(any(c.isspace() for c in item) for item in items):
                raise ValueError("items are separated by commas and contain no spaces")
            return tuple(self._one(self.kind.item_type, item) for item in items)
        return self._one(self.kind, text)

    def _one(self, kind: Any, text: str) -> Any:
        value: Any
        if isinstance(kind, mi.BoolType):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("must be true or false")
        if isinstance(kind, mi.IntType):
            auto = self.extra.get("auto")
            if auto is not None and text.lower() == "auto":
                return auto
            try:
                value = int(text, 10)
            except ValueError:
                raise ValueError("not a whole number") from None
            if value == auto:
                raise ValueError(f"must be at least {auto + 1}, or auto")
        elif isinstance(kind, mi.FloatType):
            try:
                value = float(text)
            except ValueError:
                raise ValueError("not a number") from None
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
        else:
            return self._text(kind, text)
        if kind.gt is not None and value <= kind.gt:
            raise ValueError(f"must be more than {kind.gt:g}")
        if kind.le is not None and not kind.ge <= value <= kind.le:
            raise ValueError(f"must be from {kind.ge:g} to {kind.le:g}")
        if kind.ge is not None and value < kind.ge:
            raise ValueError(f"must be at least {kind.ge:g}")
        return value

    def _text(self, kind: Any, value: str) -> str:
        if choices := self.extra.get("choices"):
            by_lower = {choice.lower(): choice for choice in choices}
            if value.lower() not in by_lower:
                raise ValueError(f"must be one of {', '.join(choices)}")
            return str(by_lower[value.lower()])
        if self.extra.get("network"):
            try:  # host bits are allowed: 10.1.2.3/8 is read as 10.0.0.0/8
                return str(ipaddress.ip_network(value, strict=False))
            except ValueError:
                raise ValueError(f"{value!r} is not an IP network such as 10.0.0.0/8") from None
        value = value.rstrip(self.extra.get("rstrip", ""))
        if kind.pattern and not re.search(kind.pattern, value):
            raise ValueError(f"must be {self.extra['expect']}")
        if (file := self.extra.get("file")) and value:
            if not Path(value).is_file():
                raise ValueError("no such file")
            try:
                content = Path(value).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read it: {exc.strerror}") from None
            if file == "pem" and b"-----BEGIN " not in content:
                raise ValueError("not a PEM file")
        return value


def fields_of(struct: type[msgspec.Struct]) -> tuple[Field, ...]:
    """One :class:`Field` per field of ``struct`` that a variable may set, in declaration order.

    Every field must be ``Annotated`` with a ``Meta`` holding at least its description.
    """
    info = mi.type_info(struct)
    assert isinstance(info, mi.StructType)
    fields = []
    for f in info.fields:
        assert isinstance(f.type, mi.Metadata), f"{f.name} has no description"
        extra, kind = f.type.extra or {}, f.type.type
        if extra.get("variable", True):
            help_text = str((f.type.extra_json_schema or {})["description"])
            fields.append(Field(f.name, f.name.upper(), "--" + f.name.replace("_", "-"), kind,
                                f.default, help_text, extra))
    return tuple(fields)


_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_env_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines; ``#`` comments, blank lines, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {line.strip()!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values
