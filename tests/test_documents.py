"""RESULTS.md and BENCHMARKS.md: every command they give names a module, a subcommand and
flags that exist, every cited section exists, and no document reads as a diary.

A command is any ``zylax SUB ...``, ``python -m zylax.cli SUB ...``, ``python -m
experiments.X ...``, ``python -m benchmarks.X ...``, ``python scripts/X.py ...`` or
``bash scripts/X.sh`` in a fenced code block or an inline code span (table cells
included). Its module or script must exist and each of its ``--flags`` must too: a
``zylax`` subcommand's flags are checked against the parser ``zylax.cli.build_parser``
builds, a module's or script's against its source text. Citations of a section
(``RESULTS.md, "Name"``, ``BENCHMARKS.md, section 7``) anywhere in the repository must
find a heading of that name or number.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = ("RESULTS.md", "BENCHMARKS.md")
MODULE_PACKAGES = ("experiments", "benchmarks")

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`([^`]+)`")
SEPARATORS = {"&&", "||", "|", ";", ">", ">>", "2>&1", "<"}
PATH = re.compile(r"^(?:experiments|benchmarks|scripts|zylax|tests)/[\w./-]+\.(?:py|sh)$")

DIARY = [re.compile(p, re.IGNORECASE) for p in (
    r"\bsessions? \d+",
    r"\bsession-\d+",
    r"\b(?:this|that|last|previous|next|earlier) session\b",
    r"\b(?:first|second|third|fourth|fifth|sixth|next|earlier|previous|last) attempts?\b",
    r"\battempt (?:#|no\.? ?)?\d",
    r"\bnewest first\b",
    r"\b(?:yesterday|today|tonight)\b",
    r"\b(?:19|20)\d\d-\d\d-\d\d\b",
)]

CITATION = re.compile(
    r'\b(RESULTS|BENCHMARKS)\.md[,:]?\s*\(?\s*(?:section\s+(\d+)\b|"([^"]+)")')


# --- reading the documents -------------------------------------------------------------


def snippets(text: str) -> list[str]:
    """The code of ``text``: each logical line of its fenced blocks (continuations
    joined), then each inline code span (line breaks inside a span become spaces)."""
    out = []
    for block in FENCE.findall(text):
        out += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    prose = FENCE.sub("", text)
    out += [" ".join(span.split()) for span in INLINE.findall(prose)]
    return out


def _tokens(snippet: str) -> list[str]:
    try:
        return shlex.split(snippet, comments=True)
    except ValueError:  # an unbalanced quote in prose-like code
        return snippet.split()


def _is_python(token: str) -> bool:
    return re.fullmatch(r"(?:\S*/)?python(?:3(?:\.\d+)?)?", token) is not None


def _is_zylax(token: str) -> bool:
    return re.fullmatch(r"(?:\S*/)?zylax", token) is not None


def commands(snippet: str) -> list[tuple[str, str, list[str]]]:
    """``(kind, target, args)`` for each command in ``snippet``: kind ``zylax`` (target:
    the subcommand), ``module`` (target: the dotted module) or ``script`` (target: the
    path); ``args`` are the tokens after the target, up to a shell separator or the next
    command."""
    tokens = _tokens(snippet)
    found, i = [], 0
    while i < len(tokens):
        tok, rest = tokens[i], tokens[i + 1:]
        start = None
        if _is_zylax(tok) and rest:
            start = ("zylax", rest[0], i + 2)
        elif _is_python(tok) and len(rest) >= 2 and rest[0] == "-m":
            module = rest[1]
            if module == "zylax.cli" and len(rest) >= 3:
                start = ("zylax", rest[2], i + 4)
            elif module.split(".")[0] in MODULE_PACKAGES:
                start = ("module", module, i + 3)
        elif rest and ((_is_python(tok) and rest[0].endswith(".py"))
                       or (tok == "bash" and rest[0].endswith(".sh"))):
            start = ("script", rest[0], i + 2)
        if start is None:
            i += 1
            continue
        kind, target, j = start
        args = []
        while j < len(tokens) and tokens[j] not in SEPARATORS and not (
                _is_zylax(tokens[j]) or _is_python(tokens[j])):
            args.append(tokens[j])
            j += 1
        found.append((kind, target, args))
        i = j
    return found


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


# --- what exists --------------------------------------------------------------------------


@functools.cache
def zylax_options() -> dict[str, set[str]]:
    """Each ``zylax`` subcommand and its option strings, from the real parser."""
    from zylax import cli
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = set(parser._option_string_actions)
    return {name: set(p._option_string_actions) | top for name, p in sub.choices.items()}


@functools.cache
def registered_nets() -> frozenset[str]:
    from zylax import registry
    return frozenset(registry.NETS)


def module_file(root: pathlib.Path, dotted: str) -> pathlib.Path | None:
    base = root.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if path.is_file():
            return path
    return None


def _flag_in_source(flag: str, source: str) -> bool:
    if f'"{flag}"' in source or f"'{flag}'" in source:
        return True
    # argparse.BooleanOptionalAction adds --no-NAME for --NAME
    return (flag.startswith("--no-") and "BooleanOptionalAction" in source
            and (f'"--{flag[5:]}"' in source or f"'--{flag[5:]}'" in source))


def problems(text: str, root: pathlib.Path = ROOT) -> list[str]:
    """Every command of ``text`` that names a module, script, subcommand, flag, net or
    model factory that does not exist, and every code span naming a missing file."""
    out = []
    for snippet in snippets(text):
        if PATH.match(snippet) and not (root / snippet).is_file():
            out.append(f"{snippet}: no such file")
        for kind, target, args in commands(snippet):
            where = f"{snippet!r}"
            flags = _flags(args)
            if kind == "zylax":
                options = zylax_options()
                if target not in options:
                    out.append(f"{where}: no zylax subcommand {target!r}")
                    continue
                out += [f"{where}: zylax {target} has no {f}" for f in flags
                        if f not in options[target]]
                for name, value in itertools.pairwise(args):
                    if value.isupper():  # a placeholder: NET, FILE, S
                        continue
                    if name in ("--net", "--recipe") and value not in registered_nets():
                        out.append(f"{where}: {name} {value!r} is not a registered net")
                    if name == "--model" and re.fullmatch(r"[\w.]+:\w+", value):
                        dotted, factory = value.split(":")
                        path = module_file(root, dotted)
                        if path is None:
                            out.append(f"{where}: no module {dotted!r}")
                        elif not re.search(rf"^(?:def|class) {factory}\b|^{factory}\s*=",
                                           path.read_text(), re.MULTILINE):
                            out.append(f"{where}: {dotted} defines no {factory!r}")
            else:
                path = (module_file(root, target) if kind == "module"
                        else root / target if (root / target).is_file() else None)
                if path is None:
                    out.append(f"{where}: no {kind} {target!r}")
                    continue
                source = path.read_text()
                out += [f"{where}: {target} has no {f}" for f in flags
                        if not _flag_in_source(f, source)]
    return out


def diary_words(text: str) -> list[str]:
    return [m.group(0) for pattern in DIARY for m in pattern.finditer(text)]


def headings(text: str) -> list[str]:
    return [line.lstrip("#").strip().replace("`", "")
            for line in FENCE.sub("", text).splitlines() if line.startswith("#")]


def cites(name: str, section: str | None, title: str | None,
          root: pathlib.Path = ROOT) -> bool:
    """Whether ``name`` (RESULTS or BENCHMARKS) has the cited section heading."""
    found = headings((root / f"{name}.md").read_text())
    if section is not None:
        return any(re.match(rf"{section}\.\s", h) for h in found)
    return any(title in h for h in found)


def _repository_texts(root: pathlib.Path = ROOT):
    skip = {".venv", ".git", "runs", "zylax.egg-info", "node_modules", "__pycache__"}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for name in sorted(files):
            path = pathlib.Path(folder, name)
            if (path.suffix not in (".py", ".md", ".ipynb")
                    or path.resolve() == pathlib.Path(__file__).resolve()):
                continue
            text = path.read_text(errors="replace")
            if path.suffix == ".ipynb":
                cells = json.loads(text).get("cells", [])
                text = "\n".join("".join(c.get("source", "")) for c in cells)
            yield path.relative_to(root), text


def citations(root: pathlib.Path = ROOT) -> list[tuple[str, str, str | None, str | None]]:
    """``(file, RESULTS|BENCHMARKS, section number, heading)`` for each citation."""
    out = []
    for rel, text in _repository_texts(root):
        for m in CITATION.finditer(" ".join(text.split())):
            out.append((str(rel), m.group(1), m.group(2), m.group(3)))
    return sorted(set(out), key=lambda c: tuple(x or "" for x in c))


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_command_names_a_module_and_flags_that_exist(name):
    text = (ROOT / name).read_text()
    assert any(commands(s) for s in snippets(text)), f"no commands found in {name}"
    assert problems(text) == []


@pytest.mark.parametrize("name", sorted(p.name for p in ROOT.glob("*.md")))
def test_no_document_reads_as_a_diary(name):
    assert diary_words((ROOT / name).read_text()) == []


@pytest.mark.parametrize("citation", citations(),
                         ids=lambda c: f"{c[0]}->{c[1]}:{c[2] or c[3]}")
def test_every_cited_section_has_a_heading(citation):
    _, name, section, title = citation
    assert cites(name, section, title), citation


def test_the_checks_catch_wrong_commands_and_diary_words():
    wrong = """
```bash
zylax compress --net lenet5 --no-such-flag 1 --out x.zyl
python -m experiments.no_such_experiment --nets a
```
| row | `python -m experiments.class_iou FILE --no-such-option 3` |
| row | `zylax evaluate FILE --scales 1 --flip` and `zylax frobnicate FILE` |
`python -m zylax.cli train --net no_such_net --out o`
`zylax train --model experiments.scene_trunk:no_such_factory --out o`
`bash scripts/no_such.sh` and `benchmarks/no_such.py`
In session 19, the third attempt on 2026-01-02 ...
"""
    found = problems(wrong)
    assert any("--no-such-flag" in p for p in found)
    assert any("experiments.no_such_experiment" in p for p in found)
    assert any("--no-such-option" in p for p in found)
    assert any("frobnicate" in p for p in found)
    assert any("no_such_net" in p for p in found)
    assert any("no_such_factory" in p for p in found)
    assert any("scripts/no_such.sh" in p for p in found)
    assert any("benchmarks/no_such.py" in p for p in found)
    assert not any(p.endswith(("has no --scales", "has no --flip", "has no --out"))
                   for p in found)
    assert len(diary_words(wrong)) == 3
    assert not cites("BENCHMARKS", "99", None)
    assert not cites("RESULTS", None, "No such section")
