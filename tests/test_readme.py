"""The user docs name only config keys, modules, config files and links that exist.

A README that drifts from the code (a renamed key, a moved module) fails here
instead of at a user's launch. Scanned: README.md, launch/README.md and
docs/*.md. docs/results/ is a dated record (commands as of the commits it
names) and is not scanned.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from sidjax.configs import base_config

ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [ROOT / "README.md", ROOT / "launch" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
# `config.a.b`, `--config.a.b=...`, `self.config.a` (not `sidjax/configs/...`).
_CONFIG_REF = re.compile(rf"(?<![\w/])config\.({_DOTTED})")
# A dotted name at the start of a token inside an inline code span: `sids.embed.method`, `model.source=hf`.
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_CODE_TOKEN = re.compile(rf"(?<![\w./\-<])({_DOTTED}\.[A-Za-z_]\w*)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_FILE_SUFFIXES = {"py", "json", "jsonl", "npy", "md", "sh", "gz", "csv", "txt", "png", "inter", "safetensors", "gguf"}
_MODULE = re.compile(r"\bpython[\d.]*\s+-m\s+([\w.]+)")
_CONFIG_FILE = re.compile(r"experiments/configs/\w+\.py")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def config_keys(text: str, sections: set[str]) -> set[str]:
    """Every config key the text names: `config.<key>` anywhere, and `<section>.<key>` in inline code."""
    names = set(_CONFIG_REF.findall(text))
    prose = _FENCE.sub("", text)
    for span in _INLINE_CODE.findall(prose):
        names |= {name for name in _CODE_TOKEN.findall(span) if name.split(".")[0] in sections}
    return {name for name in names if name.rsplit(".", 1)[-1] not in _FILE_SUFFIXES}


def missing_keys(keys: set[str], config) -> list[str]:
    """The keys that are not in `config` (a key may name a section or a leaf)."""
    missing = []
    for key in sorted(keys):
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                missing.append(key)
                break
            node = node[part]
    return missing


def _docs_text() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in USER_DOCS}


def test_scanner_finds_keys_in_every_form():
    sections = set(base_config().keys())
    text = (
        "Set `sids.embed.kind` and `model.source=gguf`, then run `--config.eval.beams=50` or "
        "`--config.redo='(\"sft\",)'`; `sidjax.data.minionerec`, `data.py`, `bench.all`, "
        "`sidjax/configs/sft.py` and `config.json` are not keys.\n```\nconfig.mesh.remat = 'full'\nsft.not_a_key\n```\n"
    )
    keys = config_keys(text, sections)
    assert keys == {"sids.embed.kind", "model.source", "eval.beams", "redo", "mesh.remat"}
    assert missing_keys(keys, base_config()) == ["sids.embed.kind"]


@pytest.mark.parametrize("name", [str(p.relative_to(ROOT)) for p in USER_DOCS])
def test_every_config_key_exists(name):
    config = base_config()
    keys = config_keys(_docs_text()[name], set(config.keys()))
    assert missing_keys(keys, config) == [], f"{name} names config keys that base_config() does not have"


def test_readme_names_the_keys_users_set():
    keys = config_keys(_docs_text()["README.md"], set(base_config().keys()))
    assert {"stages", "redo", "data.source", "sids.embed.method", "model.source", "entries",
            "eval.models", "eval.rescore", "eval.rescore_weights"} <= keys


@pytest.mark.parametrize("name", [str(p.relative_to(ROOT)) for p in USER_DOCS])
def test_every_module_and_config_file_exists(name):
    text = _docs_text()[name]
    modules = set(_MODULE.findall(text))
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []
    files = set(_CONFIG_FILE.findall(text))
    assert [f for f in sorted(files) if not (ROOT / f).is_file()] == []


@pytest.mark.parametrize("name", [str(p.relative_to(ROOT)) for p in USER_DOCS])
def test_every_local_link_exists(name):
    base = (ROOT / name).parent
    targets = {t.split("#")[0] for t in _LINK.findall(_docs_text()[name]) if "://" not in t}
    assert [t for t in sorted(targets) if t and not (base / t).exists()] == []


def test_ci_runs_the_readme_test_command():
    readme = _docs_text()["README.md"]
    commands = re.findall(r"^```bash\n(.*?)\n```", readme, re.S | re.M)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert "python -m experiments.train --config=experiments/configs/demo.py" in commands[0]
    assert commands[1] == ci
