"""Errors in the user's words: an error that tells a shell user what to do names a command, a
flag or a YAML field, never a Python function of EdgeWeave ("write a new one with
write_token()" was the finding). A scan of every raised error's text keeps new ones out; the
errors a user meets through a command are checked as the user sees them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from typer.testing import CliRunner

from edgeweave.cli.app import app

SRC = Path(__file__).resolve().parents[2] / "src" / "edgeweave"

#: Errors that name a function but are raised only to Python callers of that API (no command
#: reaches them): (file under src/edgeweave, function named) -> why.
API_ONLY = {
    ("codec/packing.py", "pack_bits"): "its bits come from a codec, never from a user",
    ("runtime/recipe.py", "capture"): "the commands always capture from a model specifier",
    ("runtime/netlab.py", "start"): "the NetLab object used outside its `with` block",
    ("runtime/incremental.py", "start"): "the incremental client queried before it started "
    "(infer/lab/netlab --upload incremental start it first)",
    ("graph/split.py", "split"): "stages handed to run_stages by Python code",
    ("plan/variants.py", "profile_variants"): "`adapt select` always passes its variants",
    ("train/split/pipeline.py", "close"): "a pipeline object used after close()",
    ("train/privacy/accountant.py", "noise_for_epsilon"): "the YAML's privacy section is "
    "validated before (target_epsilon > 0, rounds >= 1)",
}

# `name(` of a call a user is told to make; plurals such as "value(s)" and methods of other
# libraries ("torch.save(...)") are not calls of EdgeWeave's functions
CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\((?!s\))")
PREFIX = re.compile(r"^([a-z]+_[a-z0-9_]+):")  # "make_task: ..." names the function at fault


def _functions(trees: dict[Path, ast.Module]) -> set[str]:
    return {n.name for t in trees.values() for n in ast.walk(t)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")}


def _raised_texts(tree: ast.Module):
    """(line, the literal text of the exception's arguments) of every `raise X(...)`."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Raise) and isinstance(n.exc, ast.Call):
            parts = [c.value for c in ast.walk(n.exc)
                     if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            yield n.lineno, "".join(parts)


def _python_in_errors(src: Path = SRC) -> list[str]:
    trees = {p: ast.parse(p.read_text()) for p in src.rglob("*.py") if "_pb2" not in p.name}
    functions = _functions(trees)
    found = []
    for path, tree in trees.items():
        rel = path.relative_to(src).as_posix()
        for line, text in _raised_texts(tree):
            named = {m for m in CALL.findall(text) if m in functions}
            named |= {m for m in PREFIX.findall(text.strip()) if m in functions}
            for name in sorted(named):
                if (rel, name) in API_ONLY or "`edgeweave " in text:
                    continue  # API-only, or the command comes first for a shell user
                found.append(f"{rel}:{line}: names {name}(): {text[:100]!r}")
    return found


def test_no_error_tells_the_user_to_call_a_python_function():
    assert _python_in_errors() == []


def test_the_scan_finds_a_function_in_an_error(tmp_path):
    """The scan itself can fail: the finding's message, put back, is caught."""
    (tmp_path / "mod.py").write_text(
        "def write_token(path):\n    pass\n\n\ndef load(p):\n"
        "    raise ValueError(f'token in {p} too short; write a new one with write_token()')\n")
    assert [f.split(": names ")[1][:14] for f in _python_in_errors(tmp_path)] == [
        "write_token():"]


def _run(*args: str):
    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code != 0
    return " ".join(str(res.exception).split())


def test_certs_names_the_flag_not_the_function(tmp_path):
    text = _run("certs", str(tmp_path / "pki"), "--node", "edge", "--node", "edge")
    assert text == "certs: --node names ['edge'] more than once; each node needs its own name"


def test_a_dataset_split_by_client_names_the_flag_and_yaml_field(tmp_path):
    text = _run("fl", "split", "synthetic:1,1", "--clients", "3", "--out", str(tmp_path / "p"))
    assert text.startswith("data.partition (--partition): dataset 'synthetic:1,1' is already "
                           "split by client; use 'natural'"), text
