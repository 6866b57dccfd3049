"""Test helpers importable from a subprocess a test starts (conftest fixtures are not)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def base(cache_dir: str | None = None) -> tuple[str, list]:
    """The default suite and its embedded base model, built once into ``cache_dir`` (default $ORDEROPT_CACHE)."""
    from orderopt.model import ModelConfig, base_model_path
    from orderopt.tasks import build_suite

    tasks = build_suite(["arith", "strings", "qa", "names"])
    path = base_model_path(ModelConfig(cache_dir=cache_dir or os.environ["ORDEROPT_CACHE"]), tasks)
    return path, tasks


#: small eval sets for tests that train (evaluation dominates a run of a few steps): task name → config changes.
#: Only with the base model given by path: the default model's build key hashes the tasks' settings.
SMALL_EVAL = {"arith": {"n_eval": 24}, "strings": {"n_eval": 24}, "qa": {"n_eval": 24}, "names": {"n_eval": 8}}


def small_eval() -> dict[str, dict[str, int]]:
    """A fresh copy of :data:`SMALL_EVAL`, for a config's ``tasks``."""
    return {t: dict(changes) for t, changes in SMALL_EVAL.items()}


def small_eval_args(model: str) -> list[str]:
    """Command-line overrides: the base model by path and :data:`SMALL_EVAL`."""
    return [f"model.name_or_path={model}"] + [
        f"tasks.{t}.{k}={v}" for t, changes in SMALL_EVAL.items() for k, v in changes.items()
    ]


def cli(command: str, args: list[str], cwd: str | Path, cache_dir: str, **env: str) -> Any:
    """``python -m orderopt.cli <command> <args>``: the real Hydra app in a subprocess (``env`` adds variables)."""
    import subprocess
    import sys

    full_env = {**os.environ, "ORDEROPT_CACHE": cache_dir, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "orderopt.cli", command, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def save_random_lm(path: str | Path, tokenizer: Any, *, hidden: int = 32, layers: int = 1) -> str:
    """A real (randomly initialised, seeded) Llama causal LM with ``tokenizer``, saved to ``path``: for tests of
    code that loads a model, where the weights do not matter."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def toy_record(**fields: object) -> dict:
    """A complete run record (every field :func:`orderopt.records.check_record` requires) with ``fields`` set."""
    final = {"a": 0.5, "b": 0.5}
    record = {
        "run_id": "full-x-s0",
        "kind": "full",
        "seed": 0,
        "schedule": {"stages": [{"tasks": ["a"], "steps": 1}, {"tasks": ["b"], "steps": 1}]},
        "schedule_key": "a:1>b:1",
        "model": "/m/tiny-x",
        "model_id": "tiny-x",
        "suite": ["a", "b"],
        "evals": [{"after": "base", "scores": final, "entropy": {"a": 1.0, "b": 1.0}}] * 3,
        "final": final,
        "mean_final": 0.5,
        "wall_s": 1.0,
    }
    return {**record, **fields}


def short_rubric(prompt: str, completion: str) -> float:
    """A rubric function for judged dataset tasks in tests: short completions of letters score high."""
    text = completion.strip()
    return 1.0 if 0 < len(text) <= 8 and text.isalpha() else 0.2


def wandb_records(path: str | Path) -> list[Any]:
    """The protobuf records of an offline wandb run file (``run-*.wandb``): wandb writes them in LevelDB's log
    format (a 7-byte header, then 32 KiB blocks of checksummed chunks) and ships no Python reader of its own."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos = Path(path).read_bytes(), 32768, 7
    chunks: list[bytes] = []
    partial = b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        piece, pos = data[pos : pos + length], pos + length
        if kind == 1:  # a whole record
            chunks.append(piece)
        elif kind in (2, 3):  # its first or a middle chunk
            partial += piece
        elif kind == 4:  # its last chunk
            chunks.append(partial + piece)
            partial = b""
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def wandb_run(run_dir: str | Path) -> dict[str, Any]:
    """What an offline wandb run directory (``offline-run-*``) holds: its display name, job type, tags, group and
    config, its history rows (keys joined by '/') and its summary."""
    import json

    (path,) = Path(run_dir).glob("*.wandb")
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out |= {"name": run.display_name, "job_type": run.job_type, "tags": list(run.tags), "group": run.run_group}
            out["config"].update({i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"})
        elif kind == "history":
            out["history"].append(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "summary":
            out["summary"].update(
                {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
            )
    return out
