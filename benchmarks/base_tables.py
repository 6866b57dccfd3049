"""Does this machine see the committed base tables? Loads the base model each committed study ships, evaluates it on
the study's suite and compares with the study's ``base_eval.json`` (scores and entropies as the README prints them,
3 decimals, and the largest raw differences).

    python benchmarks/base_tables.py                     # studies default and rich, with this machine's threads
    OMP_NUM_THREADS=1 python benchmarks/base_tables.py --json out.json

Run it on a fresh clone with an empty cache (``ORDEROPT_CACHE=/tmp/empty``): it must build nothing. Exit status 1 if a
table differs or a model had to be built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from orderopt.cli import CONF_DIR, evaluate_base, typed_config

ROOT = Path(__file__).resolve().parents[1]
#: committed study -> the suite its base model was built for
STUDIES = {"default": "default", "rich": "rich"}


def check(study: str, suite: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = typed_config(compose(config_name="config", overrides=[f"suite={suite}", f"study={study}"]))
    start = time.perf_counter()
    got = evaluate_base(cfg)
    ref = json.loads((ROOT / "studies" / study / "base_eval.json").read_text())
    rows = {k: (v["score"], v["entropy"]) for k, v in got["tasks"].items()}
    want = {k: (v["score"], v["entropy"]) for k, v in ref["tasks"].items()}
    return {
        "study": study,
        "model": got["model"],
        "model_id": got["model_id"],
        "same_model": got["model_id"] == ref["model_id"],
        "same_table": {k: f"{s:.3f} {h:.3f}" for k, (s, h) in rows.items()}
        == {k: f"{s:.3f} {h:.3f}" for k, (s, h) in want.items()},
        "max_score_diff": max(abs(rows[k][0] - want[k][0]) for k in want),
        "max_entropy_diff": max(abs(rows[k][1] - want[k][1]) for k in want),
        "scores": {k: s for k, (s, _) in rows.items()},
        "wall_s": round(time.perf_counter() - start, 1),
    }


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", action="append", choices=sorted(STUDIES), help="repeatable; default: all")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    where = {
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cache": os.environ.get("ORDEROPT_CACHE"),
    }
    print(f"machine: {where}")
    results = [check(s, STUDIES[s]) for s in args.study or sorted(STUDIES)]
    for r in results:
        print(
            f"{r['study']:8s} {r['model_id']} from {r['model']}: same model {r['same_model']}, same table "
            f"{r['same_table']} (max |Δscore| {r['max_score_diff']:.1e}, max |Δentropy| {r['max_entropy_diff']:.1e})"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": where, "results": results}, indent=1))
    return 0 if all(r["same_model"] and r["same_table"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
