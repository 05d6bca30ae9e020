"""The item record every layer shares: the text an item carries (SID embedding, tokenizers, prompts read it)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Item:
    title: str
    description: str = ""
    brand: str = ""
    categories: str = ""
