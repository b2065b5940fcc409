"""Tests of the documentation: the generated configuration reference is current and complete,
the generator reads config sources as documented, the README stays short and links resolve."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from config import get_cfg_defaults

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generate_config_docs.py"
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _load_generator():
    """scripts/generate_config_docs.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate_config_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _leaf_keys(node, prefix: str = "") -> list[str]:
    """Every leaf of a config node as a dotted key, e.g. ``"SAMPLER.PATCH.SAMPLER_BIAS"``."""
    keys = []
    for name, value in node.items():
        if isinstance(value, dict):
            keys += _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _generated() -> str:
    auto_keys, auto_only_keys = gen.load_auto_keys()
    return gen.render_configuration(
        gen.CONFIG_PY.read_text(encoding="utf-8"), auto_keys, auto_only_keys
    )


def test_configuration_md_is_current():
    current = gen.CONFIG_MD.read_text(encoding="utf-8") if gen.CONFIG_MD.is_file() else ""
    assert current == _generated(), (
        "docs/configuration.md is out of date with config.py: run "
        "python scripts/generate_config_docs.py"
    )


def test_every_default_key_is_documented():
    text = _generated()
    missing = [key for key in _leaf_keys(get_cfg_defaults()) if f"| `{key}` |" not in text]
    assert not missing, f"keys missing from docs/configuration.md: {missing}"


SMALL_CONFIG = """
from yacs.config import CfgNode as CN

_C = CN()

# -----------------------------------------------------------------
_C.ALPHA = CN()
_C.ALPHA.SIZE = [4, 8]  # [height, width] of everything
_C.ALPHA.PIXELS = 64 * 64  # pixel budget (a | b)

# Settings of the inner part.
_C.ALPHA.INNER = CN()
_C.ALPHA.INNER.NAMES = [  # names of the <N> parts
    "a",
    "b",
]

_C.BETA = CN()
_C.BETA.ON = None  # switched off


def helper():
    _C.ALPHA.SIZE = [1, 1]  # not a default: inside a function
"""


def test_render_small_config():
    text = gen.render_configuration(SMALL_CONFIG, auto_keys=["ALPHA.SIZE"])
    lines = text.splitlines()
    assert "python scripts/generate_config_docs.py" in lines[0]
    assert "| `ALPHA.SIZE` | `[4, 8]` | [height, width] of everything |" in lines
    assert "| `ALPHA.PIXELS` | `64 * 64` | pixel budget (a \\| b) |" in lines
    assert '| `ALPHA.INNER.NAMES` | `["a", "b"]` | names of the \\<N> parts |' in lines
    assert "| `BETA.ON` | `None` | switched off |" in lines
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [
        "# Configuration reference",
        '## Keys that accept "auto"',
        "## ALPHA",
        "### ALPHA.INNER",
        "## BETA",
    ]
    assert "Settings of the inner part." in lines
    assert "- `ALPHA.SIZE`" in lines
    assert "[1, 1]" not in text


def test_sub_node_follows_its_top_level_node():
    source = (
        SMALL_CONFIG + "\n_C.BETA.LATE = CN()\n_C.ALPHA.LATE = CN()\n_C.ALPHA.LATE.X = 1  # x\n"
    )
    headings = [h for h in gen.render_configuration(source).splitlines() if h.startswith("##")]
    assert headings == ["## ALPHA", "### ALPHA.INNER", "### ALPHA.LATE", "## BETA", "### BETA.LATE"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("_C = CN()\n_C.A = CN()\n_C.A.B = 1\n", r"A\.B has no comment"),
        ("_C = CN()\n_C.A = CN()\n_C.A.B = 1  #\n", r"A\.B has no comment"),
        ("_C = CN()\n_C.A.B = 1  # b\n", r"A\.B is assigned before its node"),
        ("_C = CN()\n_C.A = CN()\n_C.A.B = 1  # b\n_C.A.B = 2  # b\n", r"A\.B is assigned twice"),
    ],
)
def test_refuses_bad_source(source, message):
    with pytest.raises(gen.ConfigDocsError, match=message):
        gen.render_configuration(source)


def test_refuses_unknown_auto_key():
    with pytest.raises(gen.ConfigDocsError, match="ALPHA.NOPE"):
        gen.render_configuration(SMALL_CONFIG, auto_keys=["ALPHA.NOPE"])


def test_check_runs_from_any_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _relative_links(path: Path) -> list[str]:
    """The targets of the relative Markdown links in ``path``, fragments stripped."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s), mailto..., or an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_keeps_the_test_command():
    text = README.read_text(encoding="utf-8")
    testing = text.split("\n## Testing\n", 1)
    assert len(testing) == 2, "README.md needs a '## Testing' section (CI runs its command)"
    assert "python -m pytest -q" in testing[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    "page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_relative_links_resolve(page):
    broken = [t for t in _relative_links(page) if not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_link_checker_finds_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        '[a](docs/a.md#x) [b](https://x.org) [c](#y) `[d](no.md)` ![e](img.png "title")\n'
        "```\n[f](fenced.md)\n```\n"
    )
    assert _relative_links(page) == ["docs/a.md", "img.png"]
