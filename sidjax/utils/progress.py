"""Progress bars for every loop over data (tqdm), silent on processes other than 0."""
from __future__ import annotations

from typing import Iterable, Optional, TypeVar

import jax
from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Optional[Iterable[T]] = None, *, desc: str, total: Optional[int] = None, unit: str = "it") -> tqdm:
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=jax.process_index() != 0,
        dynamic_ncols=True,
        mininterval=1.0,
    )
