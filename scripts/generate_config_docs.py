"""Write docs/configuration.md, the reference of every config key, from config.py's source.

python scripts/generate_config_docs.py          # (re)write docs/configuration.md
python scripts/generate_config_docs.py --check  # exit 1 if docs/configuration.md is out of date

Every ``_C.NODE.KEY = value  # comment`` line of config.py becomes a table row: the dotted key,
the value as written in the source and the comment. Each ``_C.NODE = CN()`` is a section (a
sub-node such as ``_C.SAMPLER.PATCH`` a sub-section). Comments come from the source text, read
with ``tokenize``; only ``AUTO_KEYS`` and ``AUTO_ONLY_KEYS`` are read by importing config.py.
A key without a comment is an error naming it.
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import os
import sys
import tempfile
import textwrap
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_PY = REPO_ROOT / "config.py"
CONFIG_MD = REPO_ROOT / "docs" / "configuration.md"
GENERATE_COMMAND = "python scripts/generate_config_docs.py"

_ROOT_NAME = "_C"
_NODE_CONSTRUCTORS = ("CN", "CfgNode")
_SKIPPED_TOKENS = (
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
)
_OPENING = ("(", "[", "{")
_CLOSING = (")", "]", "}")


class ConfigDocsError(Exception):
    """config.py cannot be documented (a key without a comment, a key outside its node...)."""


@dataclass(frozen=True)
class ConfigKey:
    """One leaf of the config: ``key`` dotted without ``_C``, e.g. ``"SOLVER.BASE_LR"``."""

    key: str
    default: str  # the right-hand side as written in the source, on one line
    comment: str  # the comment after ``#``, without it
    line: int  # line number in config.py


@dataclass
class ConfigNode:
    """One ``_C.X = CN()`` node and the leaves assigned directly below it, in source order."""

    key: str
    description: str
    line: int
    keys: list[ConfigKey] = field(default_factory=list)


def _statements(config_source: str) -> Iterable[list[tokenize.TokenInfo]]:
    """The module's logical lines as token lists (comment lines before a statement included)."""
    statement: list[tokenize.TokenInfo] = []
    readline = io.StringIO(config_source).readline
    try:
        for token in tokenize.generate_tokens(readline):
            statement.append(token)
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                yield statement
                statement = []
    except (tokenize.TokenError, SyntaxError) as err:
        raise ConfigDocsError(f"config.py cannot be tokenized: {err}") from None


def _target(code: list[tokenize.TokenInfo]) -> tuple[list[str], int] | None:
    """For ``_C.A.B = ...`` at column 0: (["A", "B"], index of ``=``); else None."""
    if not code or code[0].string != _ROOT_NAME or code[0].start[1] != 0:
        return None
    parts: list[str] = []
    index = 1
    while (
        index + 1 < len(code)
        and code[index].string == "."
        and code[index + 1].type == tokenize.NAME
    ):
        parts.append(code[index + 1].string)
        index += 2
    if index >= len(code) or code[index].string != "=":
        return None
    return parts, index


def _one_line(value: list[tokenize.TokenInfo], source_lines: list[str]) -> str:
    """The value's source text on one line: verbatim if it is on one line, else its tokens
    joined by single spaces (none inside brackets' edges, no trailing comma)."""
    first, last = value[0], value[-1]
    if first.start[0] == last.end[0]:
        return source_lines[first.start[0] - 1][first.start[1] : last.end[1]]
    text = first.string
    for previous, token in itertools.pairwise(value):
        if token.string in _CLOSING and previous.string == ",":
            text = text[:-1]
        adjacent = token.start == previous.end
        if not (adjacent or previous.string in _OPENING or token.string in _CLOSING):
            text += " "
        text += token.string
    return text.replace("\n", " ")  # a string literal spanning lines


def _comment(statement: list[tokenize.TokenInfo], first_line: int, last_line: int) -> str:
    """The comment on the statement's first line, else the one on its last line; '' if none."""
    comments = {
        token.start[0]: token.string for token in statement if token.type == tokenize.COMMENT
    }
    text = comments.get(first_line) or comments.get(last_line) or ""
    return text.lstrip("#").strip()


def _description(statement: list[tokenize.TokenInfo]) -> str:
    """The comment lines right above a statement, without separator lines (``# ----``)."""
    lines: list[str] = []
    for token in statement:
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if text.strip("-=*# "):
                lines.append(text)
        elif token.type == tokenize.NL and not token.line.strip():
            lines = []  # a blank line: the comments above it are not this statement's
        elif token.type != tokenize.NL:
            break
    return " ".join(lines)


def parse_config_source(config_source: str) -> list[ConfigNode]:
    """The config's nodes in source order, each with its leaves.

    Raises ConfigDocsError naming the key and line for a key without a comment, a key assigned
    twice, or a key whose node (``_C.X = CN()``) is not assigned before it.
    """
    source_lines = config_source.splitlines()
    nodes: dict[str, ConfigNode] = {"": ConfigNode(key="", description="", line=0)}
    seen: set[str] = set()
    for statement in _statements(config_source):
        code = [token for token in statement if token.type not in _SKIPPED_TOKENS]
        target = _target(code)
        if target is None:
            continue
        parts, equals = target
        value = code[equals + 1 :]
        if not parts or not value:
            continue
        key = ".".join(parts)
        line = code[0].start[0]
        if key in seen:
            raise ConfigDocsError(f"config.py line {line}: {key} is assigned twice")
        seen.add(key)
        parent = ".".join(parts[:-1])
        if parent not in nodes:
            raise ConfigDocsError(
                f"config.py line {line}: {key} is assigned before its node _C.{parent} = CN()"
            )
        if value[0].string in _NODE_CONSTRUCTORS and len(value) > 1 and value[1].string == "(":
            nodes[key] = ConfigNode(key=key, description=_description(statement), line=line)
            continue
        comment = _comment(statement, line, value[-1].end[0])
        if not comment:
            raise ConfigDocsError(
                f"config.py line {line}: {key} has no comment; "
                f"write what it means after '#' on its line"
            )
        default = _one_line(value, source_lines)
        nodes[parent].keys.append(ConfigKey(key=key, default=default, comment=comment, line=line))
    if not nodes[""].keys:
        del nodes[""]
    return list(nodes.values())


def _escape(text: str) -> str:
    """Text for a Markdown table cell: pipes, backslashes, ``<`` and ``*`` escaped."""
    for char in ("\\", "|", "<", "*"):
        text = text.replace(char, "\\" + char)
    return text


def _paragraph(text: str) -> str:
    """Prose wrapped at 100 characters, never inside a word."""
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def _code(text: str) -> str:
    """A Markdown code span for a table cell (pipes escaped, as GitHub tables require)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _table(keys: Sequence[ConfigKey]) -> list[str]:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| {_code(k.key)} | {_code(k.default)} | {_escape(k.comment)} |" for k in keys]
    return rows


def _auto_section(
    keys: Sequence[str], auto_keys: Sequence[str], auto_only_keys: Mapping[str, str]
) -> list[str]:
    for key in (*auto_keys, *auto_only_keys):
        if key not in keys:
            raise ConfigDocsError(f"config.py: AUTO_KEYS or AUTO_ONLY_KEYS names {key}, no key")
    lines = [
        '## Keys that accept "auto"',
        "",
        _paragraph(
            'These keys may be set to the string `"auto"`: the value is then chosen from the data '
            "check and the device before the trainer is built, logged with its reason, and saved "
            "as a number in `config.yaml` and the checkpoints (see "
            "[self-configuration](running.md#self-configuration-and-data-checks))."
        ),
        "",
    ]
    lines += [f"- `{key}`" for key in auto_keys]
    if auto_only_keys:
        lines += ["", 'Keys read only while another key is `"auto"` (refused otherwise):', ""]
        lines += [f'- `{key}`: with `{other}` `"auto"`' for key, other in auto_only_keys.items()]
    return [*lines, ""]


def render_configuration(
    config_source: str,
    auto_keys: Sequence[str] = (),
    auto_only_keys: Mapping[str, str] | None = None,
) -> str:
    """The text of docs/configuration.md for config.py's source ``config_source``.

    ``auto_keys`` (config.AUTO_KEYS) are listed as accepting "auto", ``auto_only_keys``
    (config.AUTO_ONLY_KEYS: key -> the "auto" key it serves) as read only then. Raises
    ConfigDocsError (see :func:`parse_config_source`), also for an auto key that is no key.
    """
    nodes = parse_config_source(config_source)
    top_level = [node for node in nodes if "." not in node.key]
    lines = [
        f"<!-- Generated by `{GENERATE_COMMAND}` from config.py: do not edit by hand. -->",
        "",
        "# Configuration reference",
        "",
        _paragraph(
            f"This file is generated by `{GENERATE_COMMAND}` from the comments in "
            "[`config.py`](../config.py) and must not be edited by hand: change config.py and "
            "rerun the script (the test suite fails while this file is out of date)."
        ),
        "",
        _paragraph(
            "The defaults below are overridden by the YAML file given with `--cfg`, and that by "
            "`KEY VALUE` pairs on the command line (see [running](running.md)). Sizes are "
            "`[height, width]`, coordinates `[x, y]`. Details beyond the one-line meanings: "
            "[configuration notes](running.md#configuration-notes)."
        ),
        "",
        "Sections: " + " · ".join(f"[{n.key or 'top level'}](#{_anchor(n)})" for n in top_level),
        "",
    ]
    if auto_keys or auto_only_keys:
        all_keys = [k.key for node in nodes for k in node.keys]
        lines += _auto_section(all_keys, auto_keys, auto_only_keys or {})
    for node in _section_order(nodes, top_level):
        heading = "###" if "." in node.key else "##"
        lines += [f"{heading} {node.key or 'Top level'}", ""]
        if node.description:
            lines += [_paragraph(_escape(node.description)), ""]
        lines += [*_table(node.keys), ""] if node.keys else []
    return "\n".join(lines).rstrip("\n") + "\n"


def _section_order(nodes: list[ConfigNode], top_level: list[ConfigNode]) -> list[ConfigNode]:
    """Each top-level node followed by its sub-nodes (in source order, wherever assigned)."""
    ordered = []
    for top in top_level:
        ordered.append(top)
        if top.key:
            ordered += [node for node in nodes if node.key.startswith(top.key + ".")]
    return ordered


def _anchor(node: ConfigNode) -> str:
    """GitHub's anchor of a top-level section's heading."""
    return node.key.lower() if node.key else "top-level"


def load_auto_keys() -> tuple[tuple[str, ...], dict[str, str]]:
    """config.AUTO_KEYS and config.AUTO_ONLY_KEYS, imported from the repository root (empty
    where config.py has none)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        config = importlib.import_module("config")
    except Exception as err:  # any failure of config.py itself, reported as one line
        raise ConfigDocsError(f"cannot import config.py: {type(err).__name__}: {err}") from None
    return tuple(getattr(config, "AUTO_KEYS", ())), dict(getattr(config, "AUTO_ONLY_KEYS", {}))


def generate() -> str:
    """The text docs/configuration.md should have for the repository's config.py."""
    auto_keys, auto_only_keys = load_auto_keys()
    return render_configuration(CONFIG_PY.read_text(encoding="utf-8"), auto_keys, auto_only_keys)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
    try:
        os.replace(tmp.name, path)
    except OSError:
        os.unlink(tmp.name)
        raise


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) docs/configuration.md; 0 ok, 1 stale, 2 error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what is generated"
    )
    args = parser.parse_args(argv)
    relative = CONFIG_MD.relative_to(REPO_ROOT).as_posix()
    try:
        text = generate()
        if args.check:
            current = CONFIG_MD.read_text(encoding="utf-8") if CONFIG_MD.is_file() else None
            if current != text:
                sys.stderr.write(
                    f"{relative} is out of date with config.py; run {GENERATE_COMMAND}\n"
                )
                return 1
            return 0
        write_atomically(CONFIG_MD, text)
    except (ConfigDocsError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
