"""Every command in README.md, run as a user runs it, so an example that stops working fails CI.

The fenced blocks of the README are read here, so a new example is covered without touching
this file. Each block runs in a scratch folder (a copy of `examples/`, `src/` linked), its
commands in order, as `python -m edgeweave ...` subprocesses; a command passes when it exits 0
or, written with a trailing `# error: TEXT`, exits 2 with one line on stderr containing TEXT.

A command runs as written except for these rules, which keep the suite short and the examples
runnable anywhere:

* **sizes shrink where a flag allows**: `plan`/`profile` of a model measure with `--warmup 0
  --repeats 1`; `infer`, `lab` and `netlab` send `--repeat 2`; `adapt exits|compress|select`
  train `--epochs 2` (unless the example sets `--min-acc`: its accuracy floor needs the
  training it describes), `adapt edgent` `--epochs 1 --side 16 --width 8`; the copied example YAMLs
  train at most 2 rounds (`rounds:`);
* **an SLO this host cannot meet is derived from its measured speed**: when a command with
  `--slo-ms` fails only because nothing meets it (its error names the fastest option measured
  here, "fastest ... X ms"), it runs again with `--slo-ms` 1.5 X (at most three times, each
  with the latest X: every run profiles afresh, and a loaded host's figures move), and the last
  run must pass; the same for `--energy-mj` ("least: ... at X mJ");
* **ports are free ones**: every `127.0.0.1:PORT` and `--metrics-port` of a block maps to a free
  port (the same one throughout the block); `fl server` and `fl client` get the block's
  `--listen`/`--server` when they name none; `netlab` gets `--prefix ewrdPID` (namespaces apart
  from a user's);
* **servers run beside the block**: `serve` and `split-learn edge` start in the background, the
  next command waiting until they listen, and end with SIGTERM at the block's end (exit 0: a
  clean stop); `fl server` and each `fl client` start in the background too (the clients train
  together) and must all finish with exit 0 by the block's end;
* **missing inputs are made**: an `--input FILE` that does not exist is a random 224x224 PNG;
* `netlab` needs root and network namespaces: without them the block is skipped, saying why;
* `./run demo` is the first block's commands (checked equal to `run`'s demo steps) and `./run
  test` is this suite; benchmark lines are checked, not run (`./run bench` runs them): each
  script exists and takes the flags shown.

Blocks with a command in :data:`SLOW` are marked slow. The others run in parallel on
:data:`WORKERS` processes (their results are awaited per block), which keeps the default share
of this file to a few seconds of an idle two-core host.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
WORKERS = 3
TIMEOUT_S = 900.0
#: Commands that make a block slow: full torchvision models measured, several processes, models
#: trained (each such block took 1-4 minutes on this 2-core host under load, seconds to tens of
#: seconds idle). The default share keeps the blocks that train only a small model briefly.
SLOW = ("lab", "netlab", "infer", "adapt", "fl server", "plan vgg16", "plan resnet18",
        "profile resnet18", "decentral", "split-learn device", "loadgen")
SHRINK = {  # command -> (flag, small value); appended when the command does not give the flag
    "plan": [("--warmup", "0"), ("--repeats", "1")],
    "profile": [("--warmup", "0"), ("--repeats", "1")],
    "infer": [("--repeat", "2")], "lab": [("--repeat", "2")], "netlab": [("--repeat", "2")],
    "adapt exits": [("--epochs", "2")], "adapt compress": [("--epochs", "2")],
    "adapt select": [("--epochs", "2")],
    "adapt edgent": [("--epochs", "1"), ("--side", "16"), ("--width", "8")],
}
SHRUNK = {"--repeat": "2", "--epochs": None}  # given values replaced (None: leave as written)
DAEMONS = ("serve", "split-learn edge")  # run until SIGTERM
JOBS = ("fl server", "fl client")  # run beside the block and finish by themselves
FASTEST = re.compile(r"fastest(?: placement:|.*? at) ([0-9.]+) ms")
#: A budget this host cannot meet, and where its error names the least measured here.
MEASURED = {"--slo-ms": FASTEST, "--energy-mj": re.compile(r"least: .*? at ([0-9.]+) mJ")}


@dataclass
class Command:
    argv: list[str]  # after `edgeweave`
    line: str
    error: str | None = None  # expected one-line error text

    def name(self) -> str:
        """The command as the rules name it: `plan`, `fl server`, `split-learn edge`, ..."""
        a = self.argv
        if a[:1] in (["adapt"], ["fl"]) or a[:2] == ["split-learn", "edge"]:
            return " ".join(a[:2])
        return a[0] if a else ""

    def starts(self, prefix: str) -> bool:
        return " ".join(self.argv).startswith(prefix)


@dataclass
class Block:
    id: str
    commands: list[Command] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # ./run and benchmark lines

    @property
    def slow(self) -> bool:
        return any(c.starts(p) for c in self.commands for p in SLOW)


#: netlab's namespaces for this run: apart from a user's lab (`ew`) and from another test run on
#: the same host
NETLAB_PREFIX = f"ewrd{os.getpid() % 10000}"


def _logical_lines(text: str) -> list[str]:
    """Lines with their `\\` continuations joined (a comment stays on the last one)."""
    out, cur = [], ""
    for raw in text.splitlines():
        code = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].rstrip()
        if code.endswith("\\"):
            cur += code[:-1].strip() + " "
            continue
        out.append(cur + raw.strip())
        cur = ""
    return [line for line in out if line]


def readme_blocks(text: str) -> list[Block]:
    """The README's fenced blocks that hold commands, named after the heading above them."""
    blocks: list[Block] = []
    heading, seen = "top", {}
    parts = re.split(r"^```[^\n]*\n", text, flags=re.M)
    for k, part in enumerate(parts):
        if k % 2 == 0:  # prose: follow the headings
            for h in re.findall(r"^#+ (.+)$", part, flags=re.M):
                heading = re.sub(r"[^a-z0-9]+", "-", h.lower()).strip("-")[:30]
            continue
        seen[heading] = seen.get(heading, 0) + 1
        block = Block(f"{heading}-{seen[heading]}")
        for line in _logical_lines(part):
            words = shlex.split(line, comments=True)
            comment = line.split(" # ", 1)[1].strip() if " # " in line else ""
            if words[:1] == ["edgeweave"]:
                error = comment.removeprefix("error:").strip() if comment.startswith(
                    "error:") else None
                block.commands.append(Command(words[1:], line, error))
            elif words[:1] in (["./run"], [".venv/bin/python"]):
                block.other.append(line)
        if block.commands or block.other:
            blocks.append(block)
    return blocks


BLOCKS = readme_blocks(README.read_text())
RUNNABLE = [b for b in BLOCKS if b.commands]


# ------------------------------------------------------------------------------- the rules


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small(cmd: Command, ports: dict[str, int], cwd: Path) -> list[str]:
    """The command's argv under the rules of the module docstring (sizes, ports)."""
    argv = list(cmd.argv)
    for i, word in enumerate(argv):
        if i and argv[i - 1] in SHRUNK and SHRUNK[argv[i - 1]] is not None:
            argv[i] = SHRUNK[argv[i - 1]]  # type: ignore[assignment]
        m = re.fullmatch(r"127\.0\.0\.1:(\d+)", word)
        if m or (i and argv[i - 1] == "--metrics-port"):
            key = m.group(1) if m else word
            ports.setdefault(key, _free_port())
            argv[i] = f"127.0.0.1:{ports[key]}" if m else str(ports[key])
    name = cmd.name()
    model_given = name in ("plan", "profile") and len(argv) > 1 and not argv[1].startswith("-")
    for flag, value in SHRINK.get(name, []):
        if flag == "--epochs" and "--min-acc" in argv:
            continue  # an accuracy floor is the example's point: train as it says
        if flag not in argv and (name not in ("plan", "profile") or model_given):
            argv += [flag, value]
    if name in ("fl server", "fl client"):
        flag = "--listen" if name == "fl server" else "--server"
        if flag not in argv:
            argv += [flag, f"127.0.0.1:{ports.setdefault('fl', _free_port())}"]
    if name == "netlab" and "--prefix" not in argv:
        argv += ["--prefix", NETLAB_PREFIX]
    if "--input" in argv:
        _make_png(cwd / argv[argv.index("--input") + 1])
    return argv


def _make_png(path: Path) -> None:
    if not path.exists():
        import numpy as np
        from PIL import Image

        rgb = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(path)


def scratch(tmp: Path) -> Path:
    """A folder like the repository's root for the commands: examples/ copied (example YAMLs
    shrunk to 2 rounds), src/ linked."""
    for path in (ROOT / "examples").rglob("*"):
        dest = tmp / path.relative_to(ROOT)
        if path.is_symlink():  # examples/fleets -> ../src/...: the same link (src/ is linked)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(os.readlink(path))
            continue
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_bytes()
        if path.suffix == ".yaml" and path.parent.name == "fl":
            doc = yaml.safe_load(text)
            if isinstance(doc, dict) and isinstance(doc.get("rounds"), int):
                doc["rounds"] = min(doc["rounds"], 2)
            text = yaml.safe_dump(doc, sort_keys=False).encode()
        dest.write_bytes(text)
    (tmp / "src").symlink_to(ROOT / "src")
    (tmp / "out").mkdir()
    return tmp


# ------------------------------------------------------------------------------- running


def _env() -> dict[str, str]:
    return dict(os.environ, COLUMNS="120", PYTHONUNBUFFERED="1", GRPC_VERBOSITY="ERROR")


def _edgeweave(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgeweave", *argv]


def _tail(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _check(cmd: Command, argv: list[str], res: subprocess.CompletedProcess) -> str | None:
    """What is wrong with a finished command (None: it did what the README says)."""
    where = f"README: {cmd.line}\nran: edgeweave {shlex.join(argv)}\nexit {res.returncode}"
    if cmd.error is not None:
        lines = res.stderr.strip().splitlines()
        if res.returncode != 2 or len(lines) != 1 or cmd.error not in lines[0]:
            return f"{where}; expected exit 2 and one line with {cmd.error!r}:\n{res.stderr}"
        return None
    if res.returncode != 0:
        return f"{where}\n{_tail(res.stdout)}\n{_tail(res.stderr)}"
    return None


def _wait_listening(proc: subprocess.Popen, argv: list[str], log: Path) -> str | None:
    """Wait until a background server accepts connections on its --listen port."""
    flag = "--listen"
    if flag not in argv:
        return None
    host, port = argv[argv.index(flag) + 1].rsplit(":", 1)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited {proc.returncode} before listening:\n{_tail(log.read_text())}"
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, int(port))) == 0:
                return None
        time.sleep(0.3)
    return "did not listen within 180 s"


def _unmet(argv: list[str], stderr: str) -> tuple[str, float | None]:
    """The budget flag (--slo-ms, --energy-mj) nothing met here, and the least measured."""
    for flag, pattern in MEASURED.items():
        m = pattern.search(stderr) if flag in argv else None
        if m:
            return flag, float(m.group(1))
    return "", None


def run_block(block: Block, tmp: Path) -> list[str]:
    """Run one block in `tmp`; the problems found (empty: every command did as the README
    says)."""
    cwd = scratch(tmp)
    ports: dict[str, int] = {}
    problems: list[str] = []
    daemons: list[tuple[Command, subprocess.Popen, Path]] = []
    jobs: list[tuple[Command, subprocess.Popen, Path]] = []
    try:
        for n, cmd in enumerate(block.commands):
            argv = small(cmd, ports, cwd)
            if cmd.name() in DAEMONS + JOBS:
                log = tmp / f"cmd{n}.log"
                with log.open("w") as out:
                    proc = subprocess.Popen(_edgeweave(argv), cwd=cwd, env=_env(), stdout=out,
                                            stderr=subprocess.STDOUT)
                (daemons if cmd.name() in DAEMONS else jobs).append((cmd, proc, log))
                why = _wait_listening(proc, argv, log)
                if why:
                    return [f"README: {cmd.line}\n{why}"]
                continue
            res = subprocess.run(_edgeweave(argv), cwd=cwd, env=_env(), capture_output=True,
                                 text=True, timeout=TIMEOUT_S)
            for _ in range(3):  # each run profiles afresh: a loaded host's figures move
                flag, least = _unmet(argv, res.stderr)
                if not (res.returncode == 2 and least and cmd.error is None):
                    break
                argv[argv.index(flag) + 1] = f"{1.5 * least:.4g}"  # this host is slower
                res = subprocess.run(_edgeweave(argv), cwd=cwd, env=_env(),
                                     capture_output=True, text=True, timeout=TIMEOUT_S)
            problem = _check(cmd, argv, res)
            if problem:
                return [problem]
        for cmd, proc, log in jobs:
            try:
                code = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                problems.append(f"README: {cmd.line}\nexit {code}:\n{_tail(log.read_text())}")
        for cmd, proc, log in daemons:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                problems.append(f"README: {cmd.line}\nSIGTERM: exit {code} (a clean stop "
                                f"exits 0):\n{_tail(log.read_text())}")
    finally:
        for _, proc, _ in daemons + jobs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return problems


def _needs_netns(block: Block) -> str | None:
    """Why the block cannot run here (None: it can)."""
    if not any(c.name() == "netlab" for c in block.commands):
        return None
    ok, why = _netns()
    return None if ok else why


@functools.cache
def _netns() -> tuple[bool, str]:
    from edgeweave.runtime.netlab import netns_available

    return netns_available()


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Future]:
    """Every selected block, started at once on WORKERS threads (each runs its commands as
    subprocesses); a test waits for its own block."""
    wanted = {item.callspec.params["block"].id for item in request.session.items
              if item.fspath == request.fspath and hasattr(item, "callspec")
              and "block" in item.callspec.params}
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="readme")
    request.addfinalizer(lambda: pool.shutdown(wait=True, cancel_futures=True))
    order = sorted((b for b in RUNNABLE if b.id in wanted and not _needs_netns(b)),
                   key=lambda b: b.slow)  # the default share first
    return {b.id: pool.submit(run_block, b, tmp_path_factory.mktemp(b.id)) for b in order}


def _param(block: Block):
    return pytest.param(block, id=block.id, marks=[pytest.mark.slow] if block.slow else [])


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_readme_block_runs(block: Block, outcomes):
    why = _needs_netns(block)
    if why:
        pytest.skip(f"netlab needs network namespaces: {why}")
    problems = outcomes[block.id].result()
    assert not problems, "\n\n".join(problems)


# ------------------------------------------------------------------------------- the rest


def test_the_readme_starts_with_the_demo_and_the_tests_and_what_the_demo_runs():
    first, demo = BLOCKS[0], BLOCKS[1]
    assert first.other == ["./run demo", "./run test"] and not first.commands
    run_script = (ROOT / "run").read_text()
    body = run_script[run_script.index("\ndemo() {"):]
    body = body[:body.index("\n}")]
    steps = [shlex.split(line.strip().replace("$ew ", "edgeweave ", 1))
             for line in body.splitlines() if line.strip().startswith("$ew ")]
    assert steps == [["edgeweave", *c.argv] for c in demo.commands]
    assert any(c.argv[:1] == ["report"] for c in demo.commands)


def test_benchmark_lines_name_scripts_that_take_the_flags_shown():
    lines = [line for b in BLOCKS for line in b.other if line.startswith(".venv/bin/python")]
    assert lines, "the README lists no benchmarks"
    bench = (ROOT / "run").read_text()
    for line in lines:
        words = shlex.split(line, comments=True)
        script = ROOT / words[1]
        assert script.is_file(), line
        assert words[1] in bench, f"`./run bench` does not run {words[1]}"
        source = script.read_text()
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert f'"{flag}"' in source, f"{words[1]} has no {flag} (README: {line})"


def test_the_rules_find_every_command():
    names = {c.name() for b in RUNNABLE for c in b.commands}
    for expected in ("plan", "lab", "serve", "infer", "fl run", "fl server", "fl client",
                     "adapt select", "adapt edgent", "report", "decentral", "split-learn"):
        assert expected in names, expected
    errors = [c for b in RUNNABLE for c in b.commands if c.error]
    assert errors and all(c.error for c in errors)
