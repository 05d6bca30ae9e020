"""`ast.literal_eval` that is safe to call from several threads at once.

CPython 3.11's parser keeps recursion-depth state that concurrent `ast` calls
corrupt ("SystemError: AST constructor recursion depth mismatch", CPython
gh-106905, fixed in later releases); the teacher parses item descriptions from
its worker threads, so every caller goes through one lock.
"""
from __future__ import annotations

import ast
import threading
from typing import Any

_PARSER_LOCK = threading.Lock()


def literal_eval(text: str) -> Any:
    """`ast.literal_eval(text)`, serialized across threads."""
    with _PARSER_LOCK:
        return ast.literal_eval(text)
