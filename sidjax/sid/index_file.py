"""The papers' `index.json` ({item id: [SID tokens]}): read and written here, below the data layer that also uses it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from sidjax.utils.errors import DataError
from sidjax.utils.files import read_json, resolve


def _item_id(token: str, path: Path) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(path, f"'{token}' is not an integer id", field="item id") from None


def read_index(path: str | os.PathLike) -> dict[int, list[str]]:
    """`index.json`: {item id: ["<a_X>", "<b_Y>", "<c_Z>"]}."""
    p = resolve(path)
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise DataError(p, "expected a JSON object {item id: [SID tokens]}")
    out = {}
    for key, tokens in raw.items():
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(p, f"item {key}: expected a list of SID token strings")
        out[_item_id(key, p)] = tokens
    return out


def write_index(path: str | os.PathLike, index: Mapping[int, Sequence[str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({str(k): list(v) for k, v in sorted(index.items())}, f)
