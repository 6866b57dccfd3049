"""Every orderopt command the documentation shows composes: its overrides parse with Hydra's grammar as written
(quotes and all, as a shell passes them) and name keys and config options that exist. Nothing is trained."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from orderopt.cli import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "studies/README.md", "dashboards/README.md"]
COMMANDS = ("orderopt", "orderopt-base", "orderopt-train", "orderopt-study", "orderopt-report", "orderopt-probe",
            "orderopt-predict")  # fmt: skip


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv after the command) of every orderopt command in the docs' bash blocks."""
    out = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            variables: dict[str, str] = {}  # S="study=x schedule.steps=200", then $S in the commands
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if len(words) == 1 and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                    name, _, value = words[0].partition("=")
                    variables[name] = value
                    continue
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                words = shlex.split(line, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 orderopt-train ...
                    words = words[1:]
                if words and words[0] in COMMANDS:
                    out.append((f"{doc}: {line.strip()}", words[1:]))
    return out


def test_the_docs_show_commands() -> None:
    found = _commands()
    assert len(found) >= 20, found  # a parsing change that finds none would pass every case below vacuously
    assert {argv[0] for _, argv in found if argv} >= {"study=reference", "+experiment=reference"}


@pytest.mark.parametrize(("where", "argv"), _commands(), ids=[w for w, _ in _commands()])
def test_a_documented_command_composes(where: str, argv: list[str]) -> None:
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    assert all(not a.startswith("-") for a in overrides), f"{where}: flags other than --multirun: {overrides}"
    sweep = "-m" in argv or "--multirun" in argv
    if sweep:  # a multirun sweeps comma lists; compose the first point of each
        overrides = [_first_point(o) for o in overrides]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=any(o.startswith("hydra") for o in overrides))
    OmegaConf.to_object(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))  # every value's type fits


def _first_point(override: str) -> str:
    """``seed=0,1,2`` → ``seed=0``; ``'schedule.order=[a,b],[b,a]'`` → ``schedule.order=[a,b]``."""
    key, sep, value = override.partition("=")
    if not sep or key.startswith("hydra"):
        return override
    depth, cut = 0, len(value)
    for i, ch in enumerate(value):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            cut = i
            break
    return f"{key}={value[:cut]}"
