"""Quantities as users write them ("10Gbit", "4GiB", "200MB/s", "5ms", "25%"), parsed once.

Each parser raises ValueError with the accepted forms, which pydantic turns into a message that
names the field."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

from vclab.errors import shown

_NUM = r"(?P<n>\d+(?:\.\d+)?)\s*"

_RATE_UNITS = {  # bits per second
    "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
    "b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9,  # bits ("Gb/s") unless a capital B
    "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9,
}
_BYTE_UNITS = {
    "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "min": 60e3}


def _number(value: object, what: str, example: str) -> float | None:
    """A plain number as a float, or None when it is text to parse. `true` is not 1. NaN and
    infinities pass through to the types below, which refuse them (Field(allow_inf_nan=False))."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {what}; write e.g. {example}")
    if not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_rate(value: object) -> float:
    """Link or dirty rate in bits/s. '10Gbit', '1Gb/s', '200MB/s' (bytes: capital B)."""
    number = _number(value, "a rate", "10Gbit, 1Gb/s, 200MB/s")
    if number is not None:
        return number
    m = re.fullmatch(_NUM + r"(?P<u>[KMGkmg]?)(?P<b>bit|b/s|B/s|bps)", str(value).strip())
    if not m:
        raise ValueError(f"{shown(value)} is not a rate; write e.g. 10Gbit, 1Gb/s, 200MB/s")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m["u"].lower()]
    per = 8 if m["b"] == "B/s" else 1
    return float(m["n"]) * scale * per


def parse_bytes(value: object) -> int:
    """A size in bytes: '4GiB', '512MiB', '20GB', or a plain number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(_NUM + r"(?P<u>(?:[KMGTkmgt]i?)?B)", str(value).strip())
    if not m:
        raise ValueError(f"{shown(value)} is not a size; write e.g. 4GiB, 512MiB, 20GB")
    return int(float(m["n"]) * _BYTE_UNITS[m["u"].lower()])


def parse_ms(value: object) -> float:
    """A duration in milliseconds: '5ms', '40s', '250us', '2min', or a number of ms."""
    number = _number(value, "a duration", "5ms, 40s, 250us")
    if number is not None:
        return number
    m = re.fullmatch(_NUM + r"(?P<u>us|ms|s|min)", str(value).strip())
    if not m:
        raise ValueError(f"{shown(value)} is not a duration; write e.g. 5ms, 40s, 250us")
    return float(m["n"]) * _TIME_UNITS[m["u"]]


def parse_percent(value: object) -> float:
    """A share in percent: '25%' or 25."""
    number = _number(value, "a percentage", "25%")
    if number is None:
        m = re.fullmatch(_NUM + r"%", str(value).strip())
        if not m:
            raise ValueError(f"{shown(value)} is not a percentage; write e.g. 25%")
        number = float(m["n"])
    if not 0 <= number <= 100:
        raise ValueError(f"{shown(value)} is outside 0%..100%")
    return number


def format_rate(bps: float) -> str:
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("Kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


# Every quantity is finite and not negative: no comparison with NaN is ever true, so a NaN timer
# would slip through every later range check. Fields narrow these further (gt=0, le=...).
Rate = Annotated[float, BeforeValidator(parse_rate), Field(ge=0, allow_inf_nan=False),
                 PlainSerializer(format_rate, return_type=str)]
Bytes = Annotated[int, BeforeValidator(parse_bytes)]
Millis = Annotated[float, BeforeValidator(parse_ms), Field(ge=0, allow_inf_nan=False)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
