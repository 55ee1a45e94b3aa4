"""The documentation (README.md, docs/*.md) says nothing that does not work.

* Every relative link resolves to an existing file, and a ``#anchor`` to a heading of the
  linked page (GitHub's slugs).
* Every command line in a fenced code block that starts with ``fersuite-`` or ``make`` is
  checked:

  - ``make ...`` names existing Makefile targets; a target whose recipe runs a ``fersuite-``
    app (``make train ARGS="..."``) is checked as that app's command line.
  - ``fersuite-train``, ``-eval``, ``-data``, ``-profile``, ``-export`` (Hydra apps) compose
    with their overrides (every key and group option exists); a multirun composes every
    value of each sweep.
  - ``fersuite-predict`` and ``fersuite-report`` parse their ``key=value`` arguments.
  - A block preceded by ``<!-- not run: <reason> -->`` stops there (its lines are composed
    or parsed, ``<placeholder>`` taken as a plain value). Every line of any other block is
    also *run*, in-process, on tiny synthetic data with outputs under ``tmp_path``; a line
    that cannot run that way (a dataset under /data, a checkpoint, a GPU, a multirun) must be
    in a marked block.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from fersuite.config import CONFIG_DIR
from tests._helpers.apps import call_app
from tests.conftest import REPO, TINY

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Hydra apps: their config names.
HYDRA_APPS = {
    "train": "train",
    "eval": "eval",
    "data": "data_app",
    "profile": "profile",
    "export": "export",
}
OTHER_APPS = ("predict", "report")
#: Hydra flags that take a value / take none.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn"}
FLAGS = {"--multirun", "-m", "--help", "-h", "--hydra-help", "--resolve"}
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")


# --------------------------------------------------------------------------- markdown parsing


@dataclass(frozen=True)
class Command:
    """One command line of a fenced code block."""

    file: Path
    line: int  # 1-based, in the file
    text: str
    not_run: str | None  # the block's reason, or None: the line must run

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def _fence(line: str) -> str | None:
    m = re.match(r"^\s*(`{3,}|~{3,})", line)
    return m.group(1) if m else None


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, list[str], str]]]:
    """(prose lines as (lineno, text); code blocks as (first lineno, lines, marker line))."""
    prose: list[tuple[int, str]] = []
    blocks: list[tuple[int, list[str], str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = _fence(lines[i])
        if fence is None:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        before = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        body: list[str] = []
        start = i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        blocks.append((start, body, before))
    return prose, blocks


def commands_of(path: Path) -> list[Command]:
    _, blocks = split_markdown(path.read_text(encoding="utf-8"))
    found: list[Command] = []
    for start, body, before in blocks:
        marker = NOT_RUN.match(before)
        reason = marker.group(1) if marker else None
        k = 0
        while k < len(body):
            first = k
            text = body[k].strip()
            while text.endswith("\\") and k + 1 < len(body):  # continuation lines
                k += 1
                text = text[:-1].rstrip() + " " + body[k].strip()
            k += 1
            text = text.removeprefix("$ ")
            if text.startswith("fersuite-") or text == "make" or text.startswith("make "):
                found.append(Command(path, start + first, text, reason))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links_of(path: Path) -> Iterator[tuple[int, str]]:
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    for lineno, line in prose:
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        for m in re.finditer(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            yield lineno, m.group(1)


def link_problem(page: Path, target: str) -> str | None:
    """Why ``target`` (a link on ``page``) does not resolve; None when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        return None
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    if not dest.exists():
        return f"{target}: {dest} does not exist"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{target}: no heading #{anchor} in {dest.name} (has {sorted(anchors(dest))})"
    return None


# --------------------------------------------------------------------------- command checks


@dataclass
class Parsed:
    app: str  # train, eval, ..., or "make"
    overrides: list[str]
    flags: list[str]

    @property
    def multirun(self) -> bool:
        return bool({"-m", "--multirun"} & set(self.flags))

    @property
    def info_only(self) -> bool:  # prints something and stops (--cfg, --help)
        return bool({"--cfg", "-c", "--help", "-h", "--hydra-help"} & set(self.flags))


def parse_command(text: str) -> Parsed:
    """Split a command line as the shell does (comments dropped, ``<placeholder>`` a plain
    value) into app, flags and ``key=value`` arguments."""
    words = shlex.split(PLACEHOLDER.sub("PLACEHOLDER", text), comments=True)
    program, args = words[0], words[1:]
    if program == "make":
        return Parsed("make", args, [])
    app = program.removeprefix("fersuite-")
    assert app in HYDRA_APPS or app in OTHER_APPS, f"{program}: no such app"
    if app in OTHER_APPS:
        return Parsed(app, args, [])
    flags: list[str] = []
    overrides: list[str] = []
    it = iter(args)
    for a in it:
        if a in FLAGS_WITH_VALUE:
            flags += [a, next(it)]
        elif a in FLAGS:
            flags.append(a)
        else:
            assert not a.startswith("-"), f"{a}: not a flag of a Hydra app"
            overrides.append(a)
    if app == "train":
        from fersuite.cli.train import command_line  # resume.allow_changes -> its config key

        overrides = command_line(overrides)
    return Parsed(app, overrides, flags)


def jobs(overrides: list[str]) -> list[list[str]]:
    """Override lists of a multirun's jobs that use every value of every sweep at least once:
    job ``j`` takes the ``j``-th value of each sweep (its last when it has fewer). Cheaper than
    every combination, and each value still composes."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    n = max((len(c) for c in choices), default=1)
    return [[c[min(j, len(c) - 1)] for c in choices] for j in range(n)]


def compose_app(app: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(HYDRA_APPS[app], overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def makefile_targets() -> dict[str, list[str]]:
    """Makefile target -> its recipe lines."""
    targets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (REPO / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line)
        if m:
            current = targets.setdefault(m.group(1), [])
        elif line.startswith("\t") and current is not None:
            current.append(line.strip())
        else:
            current = None
    return targets


def check_make(parsed: Parsed) -> list[str]:
    """The fersuite command lines the make line runs (its targets checked to exist)."""
    targets = makefile_targets()
    variables = dict(a.split("=", 1) for a in parsed.overrides if "=" in a)
    names = [a for a in parsed.overrides if "=" not in a and not a.startswith("-")]
    assert names, "a make line without a target (name one)"
    lines: list[str] = []
    for name in names:
        assert name in targets, f"make {name}: no such target (targets: {sorted(targets)})"
        for recipe in targets[name]:
            if "$(BIN)/fersuite-" in recipe:
                line = recipe.split("$(BIN)/", 1)[1].replace("$(ARGS)", variables.get("ARGS", ""))
                lines.append(line)
    return lines


def check_composes(parsed: Parsed) -> list[DictConfig]:
    """Compose a Hydra app's command line (every job of a multirun); parse the others."""
    if parsed.app == "predict":
        from fersuite.cli._args import wants_help
        from fersuite.cli.predict import parse_args

        if not wants_help(parsed.overrides):
            parse_args(parsed.overrides)
        return []
    if parsed.app == "report":
        from fersuite.cli._args import wants_help
        from fersuite.cli.report import parse_args as parse_report

        if not wants_help(parsed.overrides):
            parse_report(parsed.overrides)
        return []
    all_jobs = jobs(parsed.overrides) if parsed.multirun else [parsed.overrides]
    return [compose_app(parsed.app, job) for job in all_jobs]


#: What each runnable app gets appended so that it runs in seconds.
TINY_DATA = ["data.train_size=32", "data.val_size=16", "data.test_size=16"]
TINY_APP = {
    "train": [*TINY, *TINY_DATA, "logger=csv"],
    "data": TINY_DATA,
    "profile": [
        "profile.latency_runs=3",
        "profile.latency_warmup=1",
        "profile.throughput_runs=1",
        "profile.throughput_warmup=1",
        "profile.batch_size=4",
        "profile.device=cpu",
    ],
}
#: The file each run writes (info-only lines write none).
WRITES = {"train": "metrics.json", "data": "data_stats.json", "profile": "profile.json"}


def why_not_runnable(command: Command, parsed: Parsed, cfg: DictConfig | None) -> str | None:
    """Why this line cannot run here on tiny data (then its block must be marked)."""
    if "PLACEHOLDER" in " ".join(parsed.flags + parsed.overrides):
        return "it has a <placeholder>"
    if parsed.app not in TINY_APP:
        return f"fersuite-{parsed.app} needs a checkpoint, model or sweep dir"
    if parsed.multirun:
        return "it is a multirun"
    assert cfg is not None
    if parsed.info_only:
        return None
    data = cfg.get("data") or {}
    if data and not str(data.get("_target_", "")).endswith("SyntheticDataModule"):
        return f"it reads a dataset ({data.get('_target_')})"
    trainer = cfg.get("trainer") or {}
    if trainer.get("accelerator") == "gpu" or "ddp" in str(trainer.get("strategy", "")):
        return "it needs GPUs or several processes"
    if str((cfg.get("profile") or {}).get("device")) == "cuda":
        return "it profiles on CUDA"
    for key in ("pretrained_path",):
        if (cfg.get("model") or {}).get(key):
            return f"model.{key} names a weights file"
    return None


def main_of(app: str) -> Callable[[], Any]:
    module = __import__(f"fersuite.cli.{app}", fromlist=["main"])
    return module.main


def run_command(
    parsed: Parsed,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root.mkdir(parents=True)
    args = [*parsed.flags, *parsed.overrides, *TINY_APP[parsed.app]]
    prog = f"fersuite-{parsed.app}"
    result = call_app(main_of(parsed.app), prog, args, root, monkeypatch, capsys)
    assert result.status == 0, f"exit status {result.status}: {result.err[-2000:]}"
    if parsed.info_only:
        assert result.out.strip(), "printed nothing"
        return
    written = list((root / "logs" / HYDRA_APPS[parsed.app].removesuffix("_app")).rglob("*"))
    names = {p.name for p in written}
    assert WRITES[parsed.app] in names, f"no {WRITES[parsed.app]} under {root}/logs"


# --------------------------------------------------------------------------- the tests

COMMANDS = [c for page in DOCS for c in commands_of(page)]


def test_docs_pages_exist_and_have_commands() -> None:
    names = {p.name for p in DOCS}
    for page in (
        "README.md",
        "datasets.md",
        "training.md",
        "distillation.md",
        "sweeps-and-reports.md",
        "deployment.md",
        "prediction-and-video.md",
        "reliability.md",
        "contributing.md",
        "architecture.md",
    ):
        assert page in names
    apps = {c.text.split()[0] for c in COMMANDS}
    for app in ("train", "eval", "data", "profile", "export", "predict", "report"):
        assert f"fersuite-{app}" in apps, f"no command line of fersuite-{app} in the docs"
    assert {"make"} <= apps
    assert any(c.not_run is None and not c.text.startswith("make") for c in COMMANDS)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    problems = [
        f"{page.name}:{lineno}: {why}"
        for lineno, target in links_of(page)
        if (why := link_problem(page, target)) is not None
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_not_run_markers_give_a_reason(page: Path) -> None:
    for lineno, line in split_markdown(page.read_text(encoding="utf-8"))[0]:
        if "not run" in line and line.strip().startswith("<!--"):
            m = NOT_RUN.match(line.strip())
            assert m and m.group(1), f"{page.name}:{lineno}: write <!-- not run: <reason> -->"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_command_line(
    command: Command,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parsed = parse_command(command.text)
    lines = [command.text]
    if parsed.app == "make":
        lines = check_make(parsed)  # targets exist; their fersuite lines are checked below
        if not lines:
            return
    for i, text in enumerate(lines):
        p = parse_command(text)
        configs = check_composes(p)
        if command.not_run is not None or parsed.app == "make":
            continue
        why = why_not_runnable(command, p, configs[0] if configs else None)
        assert why is None, (
            f"{command.id}: `{command.text}` is not run by tests ({why}); run a cheaper line or "
            "put <!-- not run: <reason> --> on the line before its code block"
        )
        run_command(p, tmp_path / f"run{i}", monkeypatch, capsys)


# --------------------------------------------------------------------------- the checker itself


def test_checker_finds_stale_keys_links_and_targets(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    from fersuite.errors import PredictError

    with pytest.raises(ConfigCompositionException):
        check_composes(parse_command("fersuite-train model.no_such_key=1"))
    with pytest.raises(ConfigCompositionException, match=r"no_such_model"):
        check_composes(parse_command("fersuite-profile -m model=mit_fer,no_such_model"))
    with pytest.raises(PredictError, match=r"unknown keys"):
        check_composes(parse_command("fersuite-predict ckpt_path=<f> inputs=a.png nope=1"))
    with pytest.raises(AssertionError, match="no such target"):
        check_make(parse_command('make no-such-target ARGS="x=1"'))
    (line,) = check_make(parse_command('make train ARGS="model.no_such_key=1"'))
    assert line.split()[:2] == ["fersuite-train", "model=mit_fer"]
    with pytest.raises(ConfigCompositionException):
        check_composes(parse_command(line))
    page = tmp_path / "page.md"
    page.write_text("# A `fersuite-data`: title\n\n## Two words\n\n## Two words\n")
    assert anchors(page) == {"a-fersuite-data-title", "two-words", "two-words-1"}
    assert link_problem(page, "#two-words-1") is None
    assert link_problem(page, "#three-words") is not None
    assert link_problem(page, "missing.md") is not None
    marked = tmp_path / "marked.md"
    marked.write_text(
        "<!-- not run: needs data -->\n```bash\nfersuite-train \\\n  data=rafdb  # x\n```\n"
        "```bash\nmake test\nfersuite-data\n```\n"
    )
    found = commands_of(marked)
    assert [(c.line, c.text, c.not_run) for c in found] == [
        (3, "fersuite-train data=rafdb  # x", "needs data"),
        (7, "make test", None),
        (8, "fersuite-data", None),
    ]
    parsed = parse_command(found[0].text)
    (cfg,) = check_composes(parsed)
    assert why_not_runnable(found[0], parsed, cfg) is not None
