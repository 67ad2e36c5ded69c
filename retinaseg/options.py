"""Checking and parsing command-line values where they enter, shared by every command (no torch import, so
`--help` stays instant). Each function is a click callback: it returns the parsed value or raises
click.BadParameter, which click prints as one `Error:` line with exit status 2."""
from __future__ import annotations

import re

import click


def parse_value(text: str):
    """'true'/'false', an int, a float, or the text itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(ctx, param, pairs) -> dict:
    """KEY=VALUE pairs -> dict (dashes in keys become underscores)."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = parse_value(value.strip())
    return options


def parse_names(ctx, param, value) -> list:
    """'drive,les,hrf' -> ['drive', 'les', 'hrf']; a repeated option's values (a tuple) are joined, so `-d a -d b`
    means a and b, as `-d a,b` does, never b alone."""
    values = (value,) if isinstance(value, str) else value
    names = [name.strip() for item in values for name in item.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("expected one name or several joined by commas")
    return names


def parse_range(ctx, param, value):
    """'LOW,HIGH' as two floats with 0 < LOW <= HIGH; None stays None."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
        if not 0 < low <= high:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH with 0 < LOW <= HIGH, such as 0.6,1.6; got {value!r}")
    return low, high


def check_device(ctx, param, value: str) -> str:
    """auto, cpu, mps, cuda or cuda:N, checked for its form here (whether CUDA is present, when it is used)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise click.BadParameter(f"expected auto, cpu, cuda or cuda:N; got {value!r}")
    return value


def check_max_downscale(ctx, param, value):
    if value is not None and value != 0 and value < 1:
        raise click.BadParameter(f"must be 0 (no limit) or at least 1, got {value}")
    return value


AUTO = "auto"


def parse_workers(ctx, param, value: str):
    """'auto' (None: the command chooses for the machine) or a count of processes from 0 to 64."""
    if value is None or value.strip().lower() == AUTO:
        return None
    try:
        count = int(value)
        if not 0 <= count <= 64:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected auto or a number from 0 to 64; got {value!r}")
    return count


def parse_shard(ctx, param, value):
    """'K/N' with 1 <= K <= N as (K, N); None stays None."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise click.BadParameter(f"expected K/N with 1 <= K <= N, such as 2/8; got {value!r}")
    return int(match[1]), int(match[2])
