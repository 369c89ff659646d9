"""Recipe YAML -> dataclasses, one per concern (like TRL's ``*Config``), with ``key=value`` overrides.

A recipe is data, never code. Overrides use dotted paths into the YAML tree before it becomes
dataclasses, so every field is overridable: ``stages.1.lr=1e-3``, ``data.max_records=200``,
``model.preset=tiny``. Values are parsed as YAML scalars (``1e-3`` -> float, ``true`` -> bool,
``[a,b]`` -> list).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARTS = ("projector", "vision", "llm")


@dataclass
class ModelArgs:
    preset: str = "tiny"
    init_from: str | None = None  # a local HF checkpoint to start Stage 0/I from instead of the preset
    base: str | None = None  # a whole VLM folder (a family in gmai.model.families) the run's first stage starts from
    vision_path: str | None = None  # local pretrained vision tower (7B presets)
    llm_path: str | None = None  # local pretrained LM (7B presets)
    tokenizer_vocab_size: int = 0  # tiny: BPE size trained on the corpus text (0 = preset default)
    attn_implementation: str = "sdpa"  # sdpa | eager (CPU); flash_attention_2 on GPU
    trust_remote_code: bool = False  # never on by default


@dataclass
class GroupRule:
    """Maps a record to a source group; the first rule that matches wins.

    Every given condition must hold. ``subset`` matches the JSONL file stem (``MM-Caption``),
    ``id_prefix`` / ``id_contains`` the record id, ``source`` the record's ``source`` field (or the
    dataset name inside a ``#``-separated id), ``has_image`` whether the record has an image.
    """

    group: str
    subset: list[str] = field(default_factory=list)
    id_prefix: list[str] = field(default_factory=list)
    id_contains: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    has_image: bool | None = None


@dataclass
class DataArgs:
    subsets: list[str] = field(default_factory=lambda: ["MM-Caption", "MM-Instruct", "MM-Percept",
                                                        "Text-Single", "Text-Multi"])
    groups: list[GroupRule] = field(default_factory=list)
    default_group: str = "core_med_caption"
    train_splits: list[str] = field(default_factory=lambda: ["train"])  # records with another split are held out
    max_records: int = 0  # 0 = all (per subset file; for quick runs)
    # Quality filter (stages with quality_filter: true): the paper drops low-quality samples in Stage III.
    min_caption_words: int = 3  # a caption shorter than this ("too-short caption") is dropped
    min_reply_words: int = 0  # any assistant reply shorter than this is dropped, in every subset (0 = off)
    caption_subsets: list[str] = field(default_factory=lambda: ["MM-Caption"])  # where min_caption_words applies
    min_confidence: float = 0.0  # records whose metadata carries a label confidence below this are dropped


@dataclass
class LoraArgs:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    quantize_4bit: bool = False  # QLoRA: bitsandbytes + a CUDA GPU


@dataclass
class StageConfig:
    name: str = ""
    enabled: bool = True
    kind: str = "multimodal"  # "multimodal" (chat samples) | "lm_warmup" (plain text LM on the corpus text)
    trainable: list[str] = field(default_factory=lambda: ["projector"])  # subset of PARTS
    lr: float = 1e-3
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    warmup_ratio: float = 0.03
    warmup_steps: int = 0  # > 0 overrides warmup_ratio
    per_device_batch_size: int = 1  # rows (packed sequences) per micro-batch
    grad_accum: int = 1
    max_length: int = 2048
    packing: bool = True
    group_by_length: bool = False  # without packing: batch rows of similar length (less padding)
    truncate: bool = False  # cut over-long samples after their image tokens instead of dropping them
    mixture: dict[str, float] = field(default_factory=dict)  # group -> fraction sampled (0 = none, 1 = all)
    quality_filter: bool = False
    # LLaVA-1.5's short-answer convention (gmai.train.data.short_answer_form): 0 = off; > 0 = single-turn Q&A
    # whose reply is already the bare answer gets the evaluator's short-answer instruction, and this share of
    # the others (sentence replies) is rewritten to that instruction + the bare gold answer.
    short_answer_share: float = 0.0
    # gmai.train.data.questions_per_image: 0/1 = off; N = single-turn samples on the same image(s) become
    # conversations of up to N questions (LLaVA-1.5's merging of VQA questions per image).
    questions_per_image: int = 0
    save_every: int = 0  # resumable checkpoint every N optimizer steps (0 = only at the end)
    keep_checkpoints: int = 2
    log_every: int = 1
    lora: LoraArgs = field(default_factory=LoraArgs)


@dataclass
class RunArgs:
    seed: int = 0
    torch_threads: int = 0  # 0 = all physical cores visible to this process
    tensorboard: bool = True
    plot: bool = True
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate); bf16 on CPU is ~10x slower, keep "no" there
    keep_step_checkpoints: bool = False  # keep OUT/checkpoints/stageK after the stage completes

    def __post_init__(self):
        if self.mixed_precision is False:  # YAML reads a bare `no` (run.mixed_precision=no) as false
            self.mixed_precision = "no"


@dataclass
class TrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    stages: dict[int, StageConfig] = field(default_factory=dict)
    run: RunArgs = field(default_factory=RunArgs)

    def enabled_stages(self) -> list[int]:
        return sorted(k for k, s in self.stages.items() if s.enabled)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RecipeError(ValueError):
    pass


def _parse_scalar(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text != "" else ""


def apply_override(tree: dict, dotted: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted = "a.b.c"``; integer keys address stages / list items."""
    keys = dotted.split(".")
    node: Any = tree
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"override {dotted!r}: {key!r} is not an index of a {len(node)}-item list")
            key = int(key)
        elif isinstance(node, dict):
            if key not in node and key.isdigit() and int(key) in node:
                key = int(key)
        else:
            raise RecipeError(f"override {dotted!r}: {'.'.join(keys[:i])!r} is a value, not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            node = node[key]


def _build(cls, raw: Any, where: str):
    """Dataclass from a dict, refusing unknown keys (a typo in a recipe must not be silently ignored)."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(names)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; known: {sorted(names)}")
    kwargs = {}
    for key, value in raw.items():
        f = names[key]
        if key == "lora":
            value = _build(LoraArgs, value, f"{where}.lora")
        elif key == "groups":
            value = [_build(GroupRule, g, f"{where}.groups[{i}]") for i, g in enumerate(value or [])]
            for g in value:
                for attr in ("subset", "id_prefix", "id_contains", "source"):
                    if isinstance(getattr(g, attr), str):
                        setattr(g, attr, [getattr(g, attr)])
        elif key == "mixture" and value is not None:
            value = {str(k): _coerce(v, "float", f"{where}.mixture.{k}") for k, v in value.items()}
        kwargs[key] = _coerce(value, f.type, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, type_name: str, where: str) -> Any:
    """PyYAML reads ``1e-3`` as a string (YAML 1.1 wants ``1.0e-3``): coerce numbers by the field's type."""
    try:
        if type_name == "float" and not isinstance(value, bool):
            return float(value)
        if type_name == "int" and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if type_name == "bool" and not isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: expected {type_name}, got {value!r}") from None
    return value


def config_from_dict(tree: dict) -> TrainConfig:
    unknown = set(tree) - {"model", "data", "stages", "run"}
    if unknown:
        raise RecipeError(f"recipe: unknown section(s) {sorted(unknown)}; known: model, data, stages, run")
    stages = {}
    for key, raw in (tree.get("stages") or {}).items():
        try:
            number = int(key)
        except (TypeError, ValueError):
            raise RecipeError(f"stages: keys are stage numbers (0 = LM warm-up, 1, 2, 3), got {key!r}") from None
        stage = _build(StageConfig, raw, f"stages.{number}")
        bad = set(stage.trainable) - set(PARTS)
        if bad:
            raise RecipeError(f"stages.{number}.trainable: unknown part(s) {sorted(bad)}; parts: {PARTS}")
        if stage.kind not in ("multimodal", "lm_warmup"):
            raise RecipeError(f"stages.{number}.kind must be multimodal or lm_warmup, got {stage.kind!r}")
        stage.name = stage.name or f"stage{number}"
        stages[number] = stage
    return TrainConfig(model=_build(ModelArgs, tree.get("model"), "model"),
                       data=_build(DataArgs, tree.get("data"), "data"), stages=stages,
                       run=_build(RunArgs, tree.get("run"), "run"))


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a recipe YAML, apply ``key=value`` overrides, validate, return a ``TrainConfig``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value (e.g. stages.1.lr=1e-3)")
        key, value = item.split("=", 1)
        apply_override(tree, key.strip(), _parse_scalar(value.strip()))
    try:
        return config_from_dict(tree)
    except RecipeError as err:
        raise RecipeError(f"recipe {str(path)!r}: {err}") from None
