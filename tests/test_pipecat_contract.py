"""Pipecat's private names that talkline relies on still exist, in the shape talkline expects.

Each module that overrides, calls or reads a private name of Pipecat declares it in its
``PIPECAT_PRIVATE`` list; these tests check every entry against the installed Pipecat, and
that no module uses a private name it has not declared. After a Pipecat upgrade, a renamed
method or attribute fails here in a second instead of in an end-to-end timeout.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import textwrap
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from talkline import lean_transport, observer
from talkline.bench import turns as bench_turns
from talkline.services import (
    gemini,
    local_stt,
    openai_llm,
    piper_tts,
    shared_stt,
    speech_gate,
    spoken_answer,
    turn_models,
    turn_taking,
)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# The pipecat-ai release every PIPECAT_PRIVATE entry was last checked against. On an
# upgrade, read the changed Pipecat classes, fix what this file reports, then bump this.
PIPECAT_CHECKED = "1.14.0"
FENCED = (
    gemini,
    turn_models,
    local_stt,
    shared_stt,
    piper_tts,
    openai_llm,
    observer,
    speech_gate,
    lean_transport,
    turn_taking,
    bench_turns,
    spoken_answer,
)
KINDS = {"override", "calls", "reads", "replaces-init"}
THIRD_PARTY = ("pipecat", "google")

Entry = tuple[ModuleType, type, str, str]


def where(module: ModuleType) -> str:
    return str(Path(inspect.getfile(module)).relative_to(SRC))


def entries() -> Iterator[Entry]:
    for module in FENCED:
        for owner, name, kind, _why in module.PIPECAT_PRIVATE:
            yield module, owner, name, kind


def entry_id(entry: Entry) -> str:
    module, owner, name, _kind = entry
    return f"{module.__name__.rsplit('.', 1)[-1]}:{owner.__name__}.{name}"


def failure(entry: Entry, problem: str) -> str:
    module, owner, name, kind = entry
    return (
        f"{where(module)} relies on Pipecat's private {owner.__name__}.{name} ({kind}): "
        f"{problem} (checked against pipecat-ai {PIPECAT_CHECKED})"
    )


def assigned_attributes(function: Any) -> set[str]:
    """The ``self.<name>`` attributes that ``function``'s own body assigns."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


@cache
def source(cls: type) -> str:
    return inspect.getsource(cls)


def assigned_anywhere(owner: type, name: str) -> bool:
    """Whether some class in ``owner``'s MRO assigns ``self.<name>`` in its source."""
    pattern = re.compile(rf"self\.{re.escape(name)}\b\s*(:|=(?!=))")
    return any(pattern.search(source(cls)) for cls in owner.__mro__[:-1])


def talkline_subclasses(module: ModuleType, owner: type) -> list[type]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and issubclass(value, owner)
        and value is not owner
    ]


def parameter_names(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def check_override(entry: Entry) -> None:
    module, owner, name, _kind = entry
    assert name in dir(owner), failure(entry, "Pipecat no longer has it")
    ours = [cls for cls in talkline_subclasses(module, owner) if name in vars(cls)]
    assert ours, failure(entry, "listed as overridden, but no class in the module overrides it")
    theirs = inspect.getattr_static(owner, name)
    for cls in ours:
        mine = vars(cls)[name]
        if isinstance(theirs, property) or isinstance(mine, property):
            assert isinstance(theirs, property) and isinstance(mine, property), failure(
                entry, "one of Pipecat's and talkline's is a property and the other is not"
            )
            continue
        expected, actual = parameter_names(mine), parameter_names(theirs)
        assert actual == expected, failure(
            entry, f"Pipecat's parameters are now {actual}, the override takes {expected}"
        )
        same_kind = inspect.iscoroutinefunction(mine) == inspect.iscoroutinefunction(theirs)
        assert same_kind, failure(entry, "one of Pipecat's and talkline's is async, one not")


def calls_in(module: ModuleType, name: str) -> list[ast.Call]:
    """Calls of ``self.<name>(...)`` and ``super().<name>(...)`` in ``module``."""
    tree = ast.parse(inspect.getsource(module))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            on_self = isinstance(receiver, ast.Name) and receiver.id == "self"
            on_super = isinstance(receiver, ast.Call) and ast.unparse(receiver) == "super()"
            if node.func.attr == name and (on_self or on_super):
                found.append(node)
    return found


def check_call(entry: Entry) -> None:
    module, owner, name, _kind = entry
    assert callable(getattr(owner, name, None)), failure(entry, "Pipecat no longer has it")
    signature = inspect.signature(getattr(owner, name))
    calls = calls_in(module, name)
    assert calls, failure(entry, "listed as called, but the module never calls it")
    for call in calls:
        keywords = {keyword.arg: None for keyword in call.keywords if keyword.arg}
        try:
            signature.bind(None, *[None] * len(call.args), **keywords)  # None stands for self
        except TypeError as error:
            pytest.fail(failure(entry, f"the call on line {call.lineno} no longer fits: {error}"))


def check_read(entry: Entry) -> None:
    _module, owner, name, _kind = entry
    present = hasattr(owner, name) or assigned_anywhere(owner, name)
    assert present, failure(entry, "Pipecat no longer defines or assigns it")


def check_replaced_init(entry: Entry) -> None:
    """Every attribute Pipecat's skipped ``__init__`` sets is set by talkline's instead."""
    module, owner, _name, _kind = entry
    theirs = assigned_attributes(vars(owner)["__init__"])
    replacements = talkline_subclasses(module, owner)
    assert replacements, failure(entry, "no class in the module replaces that __init__")
    for cls in replacements:
        missing = theirs - assigned_attributes(vars(cls)["__init__"])
        assert not missing, failure(
            entry, f"Pipecat's __init__ now also sets {sorted(missing)}; {cls.__name__} does not"
        )
    listed = {n for m, o, n, k in entries() if m is module and o is owner and k == "reads"}
    unlisted = theirs - listed
    assert not unlisted, failure(entry, f"{sorted(unlisted)} set in its place are not listed")


CHECKS = {
    "override": check_override,
    "calls": check_call,
    "reads": check_read,
    "replaces-init": check_replaced_init,
}


@pytest.mark.parametrize("entry", list(entries()), ids=entry_id)
def test_private_name_still_fits(entry: Entry) -> None:
    """Each listed private name is still in the installed Pipecat, as talkline uses it."""
    assert entry[3] in KINDS, failure(entry, f"unknown kind; use one of {sorted(KINDS)}")
    CHECKS[entry[3]](entry)


def third_party_subclasses() -> Iterator[tuple[Path, str]]:
    """(file, class name) for each class in src/talkline whose base is Pipecat's or Google's."""
    for path in sorted((SRC / "talkline").rglob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(THIRD_PARTY)
            for alias in node.names
        }
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                bases = {base.id for base in node.bases if isinstance(base, ast.Name)}
                if bases & imported:
                    yield path, node.name


def private_names_used(cls: type) -> set[str]:
    """Private attribute names ``cls``'s own body defines, reads or writes."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_every_private_name_used_is_listed() -> None:
    """A module that touches a private name of its Pipecat base class lists it."""
    unlisted = []
    for path, class_name in third_party_subclasses():
        module_name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        bases = [base for base in cls.__mro__[1:-1] if base.__module__.startswith(THIRD_PARTY)]
        listed = {name for _owner, name, *_ in getattr(module, "PIPECAT_PRIVATE", ())}
        for name in sorted(private_names_used(cls) - listed):
            if any(hasattr(base, name) or assigned_anywhere(base, name) for base in bases):
                unlisted.append(f"{path.relative_to(SRC)}: {class_name} uses {name}")
    assert not unlisted, "Pipecat private names used but not in PIPECAT_PRIVATE:\n" + "\n".join(
        unlisted
    )


def test_pipecat_version_is_the_one_checked() -> None:
    """The installed and pinned pipecat-ai are the release the lists were checked against."""
    installed = importlib.metadata.version("pipecat-ai")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.search(r"==\s*([\w.]+)", d) for d in dependencies if d.startswith("pipecat-ai")]
    pinned = pins[0].group(1) if pins and pins[0] else None
    advice = (
        "re-check every PIPECAT_PRIVATE list (run this file, read the changed Pipecat classes), "
        "then set PIPECAT_CHECKED in tests/test_pipecat_contract.py"
    )
    assert pinned == PIPECAT_CHECKED, f"pyproject pins pipecat-ai {pinned}: {advice}"
    assert installed == PIPECAT_CHECKED, f"pipecat-ai {installed} is installed: {advice}"


async def test_strip_markdown_leaves_the_words_spoken_answers_rely_on() -> None:
    """Pipecat's strip_markdown (spoken_answer.py strips each sentence with it) turns the
    markdown small models write into their plain words."""
    written = (
        "# Paris\n**Paris** is _the_ `capital`.\n- See the [Louvre](https://louvre.fr) ***now***"
    )
    plain = await spoken_answer.strip_markdown(written, "sentence")
    assert plain.split() == [
        "Paris",
        "Paris",
        "is",
        "the",
        "capital.",
        "See",
        "the",
        "Louvre",
        "now",
    ]


def test_the_tts_flushes_an_answers_tail_through_its_text_aggregator() -> None:
    """At an answer's end, Pipecat's TTS speaks the text its aggregator still holds by calling
    the aggregator's flush(): AnswerTextAggregator.flush is where a cut answer's tail is dropped."""
    end = inspect.getsource(spoken_answer.TTSService._handle_llm_response_end)
    assert "await self._text_aggregator.flush()" in end
