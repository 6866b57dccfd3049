"""What the probes cost, in full runs of wall time, measured side by side on this machine.

    python benchmarks/probe_cost.py --repeats 3                 # default probes (conf/probe/default.yaml)
    python benchmarks/probe_cost.py --repeats 3 probe.steps=30  # any Hydra override of the probe/trainer config

Each repeat, in a fresh temporary study: (1) every probe of the config as ``orderopt-probe`` runs them (the base
model evaluated once, single-task probes, then pairs, ``probe.n_jobs`` at a time); (2) two full runs of the suite's
default schedule (one stage per task at ``schedule.steps``), seeds 0 and 1, the same number at a time — so both run
under the same parallelism and threads. Reported: the probes' run wall time (``wall_s`` of their records plus the
shared base evaluation: what the probes cost) over the median full run's, for all probes and for the single-task
probes alone, and the wall-clock time each phase took. Medians over repeats.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from orderopt.cli import CONF_DIR, _quiet_transformers
from orderopt.config import Config
from orderopt.probe import probe_jobs
from orderopt.study import Study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. probe.steps=30")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _quiet_transformers()
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(_measure(_config(tmp, args.overrides)))
        r = rows[-1]
        print(
            f"repeat {repeat + 1}: probes {r['probe_s']:.0f}s (single-task {r['single_s']:.0f}s) of run wall time, "
            f"full run {r['full_s']:.0f}s -> all probes {r['all']:.2f}, single-task {r['single']:.2f} full runs | "
            f"clock: probes {r['probe_clock']:.0f}s, full runs {r['full_clock']:.0f}s",
            flush=True,
        )
    cfg = _config("/tmp", args.overrides)
    print(
        f"median of {args.repeats}: all probes = {statistics.median(r['all'] for r in rows):.2f} full runs, "
        f"single-task probes = {statistics.median(r['single'] for r in rows):.2f} ({cfg.probe.steps}-step probes, "
        f"{len(cfg.suite.tasks)} tasks, full run {len(cfg.suite.tasks)} x {cfg.schedule.steps} steps, "
        f"{probe_jobs(cfg.probe, cfg.trainer)} at a time)"
    )


def _config(studies_dir: str, overrides: list[str]) -> Config:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"studies_dir={studies_dir}", "study=cost", "wandb.enabled=false", *overrides]
        )
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _measure(cfg: Config) -> dict[str, float]:
    start = time.perf_counter()
    study = Study.from_config(cfg)
    # the study has no full run yet: its cost fractions are estimates, replaced below
    _, cost = study.probe(cfg.probe, full_steps=len(cfg.suite.tasks) * cfg.schedule.steps)
    probe_clock = time.perf_counter() - start
    start = time.perf_counter()
    plans = [study.plan(_default_key(cfg), seed) for seed in (0, 1)]
    full = study.run(plans, n_jobs=probe_jobs(cfg.probe, cfg.trainer), name="full runs")
    full_clock = time.perf_counter() - start
    full_s = statistics.median(r["wall_s"] for r in full)
    return {
        "probe_s": cost.wall_s,
        "single_s": cost.single_wall_s,
        "full_s": full_s,
        "all": cost.wall_s / full_s,
        "single": cost.single_wall_s / full_s,
        "probe_clock": probe_clock,
        "full_clock": full_clock,
    }


def _default_key(cfg: Config) -> str:
    return ">".join(f"{t}:{cfg.schedule.steps}" for t in cfg.suite.tasks)


if __name__ == "__main__":
    main()
