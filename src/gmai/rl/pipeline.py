"""The R1 recipe and the paper's iterative loop: synthesise -> SFT -> GRPO -> synthesise again.

A recipe (``recipes/r1-tiny.yaml``) has one section per concern::

    model: PATH            # the starting checkpoint (Stage III) = the first teacher
    questions: {...}       # QuestionsSection: where questions come from, held-out selection
    synth: {...}           # gmai.rl.synth.SynthConfig
    sft: {...}             # SFTSection: the SFT round on the synthesised chains (gmai.train, stage III style)
    grpo: {...}            # gmai.rl.grpo.R1GRPOConfig
    iterate: {rounds: N}   # N rounds; round r+1's teacher is round r's GRPO model

``key=value`` overrides use dotted paths (``grpo.max_steps=5``), like ``gmai train``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gmai.rl.grpo import R1GRPOConfig, train_grpo
from gmai.rl.questions import RL_FILE, SFT_FILE, SFT_POOL_FILE, build_questions
from gmai.rl.synth import SynthConfig, synthesise


@dataclass
class QuestionsSection:
    input: str | None = None  # data-engine output folder or benchmark folder (VQA-RAD)
    split: str = "train"
    hold_out: dict[str, list[str]] = field(default_factory=dict)  # e.g. {modality: [fundus]}: never trained on
    max_questions: int = 0
    sft_questions: int = 0  # > 0: SFT gets its own N questions, GRPO the rest (never rewarded on memorised ones)
    n_options: int = 4
    kinds: list[str] = field(default_factory=lambda: ["choice", "closed", "open", "box"])
    rl_kinds: list[str] | None = None  # GRPO's questions only of these kinds (e.g. [choice]); SFT keeps all `kinds`
    seed: int = 0

    def build(self, out: str | Path) -> dict[str, Any]:
        """:func:`gmai.rl.questions.build_questions` with this section's settings, into ``out``."""
        if not self.input:
            raise ValueError("no questions: set questions.input (data-engine output or benchmark folder)")
        return build_questions(self.input, out, split=self.split, seed=self.seed, max_questions=self.max_questions,
                               n_options=self.n_options, kinds=tuple(self.kinds), hold_out=self.hold_out,
                               sft_questions=self.sft_questions,
                               rl_kinds=tuple(self.rl_kinds) if self.rl_kinds else None)


@dataclass
class SFTSection:
    """One supervised round on the accepted chains, run by ``gmai.train`` (its stage-III machinery)."""

    enabled: bool = True
    trainable: list[str] = field(default_factory=lambda: ["projector", "vision", "llm"])
    lr: float = 5e-4
    epochs: float = 1.0
    max_steps: int = 0
    warmup_ratio: float = 0.03
    per_device_batch_size: int = 4
    max_length: int = 1024
    packing: bool = True
    log_every: int = 5
    torch_threads: int = 0
    add_tag_tokens: bool = True  # give <think>/</think>/<answer>/</answer> one token each if the tokenizer splits them


@dataclass
class IterateSection:
    rounds: int = 1


@dataclass
class R1Recipe:
    model: str | None = None
    questions: QuestionsSection = field(default_factory=QuestionsSection)
    synth: SynthConfig = field(default_factory=SynthConfig)
    sft: SFTSection = field(default_factory=SFTSection)
    grpo: R1GRPOConfig = field(default_factory=R1GRPOConfig)
    iterate: IterateSection = field(default_factory=IterateSection)


_FLOATS = {"lr", "epochs", "warmup_ratio", "temperature", "top_p", "dedup_threshold"}


def _section(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**{k: float(v) if k in _FLOATS and v is not None else v for k, v in raw.items()})


def recipe_from_dict(tree: dict[str, Any]) -> R1Recipe:
    known = {f.name for f in fields(R1Recipe)}
    unknown = set(tree) - known
    if unknown:
        raise ValueError(f"recipe: unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
    return R1Recipe(model=tree.get("model"),
                    questions=_section(QuestionsSection, tree.get("questions"), "questions"),
                    synth=_section(SynthConfig, tree.get("synth"), "synth"),
                    sft=_section(SFTSection, tree.get("sft"), "sft"),
                    grpo=R1GRPOConfig.from_dict(tree.get("grpo")),
                    iterate=_section(IterateSection, tree.get("iterate"), "iterate"))


def load_r1_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> R1Recipe:
    """Read an R1 recipe YAML and apply dotted ``key=value`` overrides."""
    import yaml

    from gmai.train.config import apply_override

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. grpo.max_steps=5)")
        key, value = item.split("=", 1)
        apply_override(tree, key.strip(), yaml.safe_load(value.strip()) if value.strip() else "")
    try:
        return recipe_from_dict(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(f"recipe {str(path)!r}: {err}") from None


# ---------------------------------------------------------------------------------------------
# SFT on synthesised chains, through gmai.train
# ---------------------------------------------------------------------------------------------


TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")


def add_tag_tokens(model_path: str | Path, out: str | Path) -> tuple[Path, list[str]]:
    """A copy of the checkpoint whose tokenizer has the reasoning tags as single (non-special, so
    decoding keeps them) tokens. A byte-level BPE trained on a corpus without them splits ``<think>``
    into 3-4 pieces, which a tiny model learns slowly; the new embeddings start as the mean of the
    pieces' embeddings, so the model's first guess for a tag is what it knew of its spelling.
    Returns (checkpoint, tags added); the original folder when nothing needs adding."""
    import torch

    from gmai.model.factory import load_checkpoint, save_checkpoint

    model, processor = load_checkpoint(model_path)
    tokenizer = processor.tokenizer
    pieces = {tag: tokenizer(tag, add_special_tokens=False)["input_ids"] for tag in TAG_TOKENS}
    missing = [tag for tag, ids in pieces.items() if len(ids) != 1]
    if not missing:
        return Path(model_path), []
    tokenizer.add_tokens(missing)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    with torch.no_grad():
        for tag in missing:
            new_id = tokenizer.convert_tokens_to_ids(tag)
            embed[new_id] = embed[pieces[tag]].mean(dim=0)
            head[new_id] = head[pieces[tag]].mean(dim=0)
    return save_checkpoint(model, processor, out), missing


def run_sft(model: str | Path, data_dir: str | Path, out: str | Path, sft: SFTSection, seed: int = 0,
            console=None) -> Path:
    """Train ``model`` on ``data_dir/R1-SFT.jsonl`` with ``gmai.train`` (one stage-III-style stage);
    returns the checkpoint folder (``OUT/stage3``)."""
    from gmai.train.config import config_from_dict
    from gmai.train.trainer import train

    import shutil

    # gmai.train resumes a folder whose stage is complete; an SFT round here is always a fresh run.
    shutil.rmtree(out, ignore_errors=True)
    if sft.add_tag_tokens:
        model, _ = add_tag_tokens(model, Path(out) / "start-with-tag-tokens")

    stage = {"name": "r1-sft (synthesised chains)", "trainable": sft.trainable, "lr": sft.lr, "epochs": sft.epochs,
             "max_steps": sft.max_steps, "warmup_ratio": sft.warmup_ratio,
             "per_device_batch_size": sft.per_device_batch_size, "max_length": sft.max_length, "packing": sft.packing,
             "mixture": {"r1_reasoning": 1.0}, "log_every": sft.log_every}
    cfg = config_from_dict({"model": {"init_from": str(model)},
                            "data": {"subsets": [Path(SFT_FILE).stem], "groups": [], "default_group": "r1_reasoning",
                                     "min_reply_words": 0},
                            "stages": {3: stage},
                            "run": {"seed": seed, "torch_threads": sft.torch_threads, "tensorboard": False}})
    train(cfg, data_dir, out, stages=[3], console=console)
    return Path(out) / "stage3"


# ---------------------------------------------------------------------------------------------
# The iterative loop
# ---------------------------------------------------------------------------------------------


def iterate(recipe: R1Recipe, out: str | Path, console=None) -> dict[str, Any]:
    """Questions once; then per round: synthesise with the current teacher, SFT on the accepted
    chains, GRPO from the SFT model; the GRPO model is the next round's teacher."""
    if not recipe.model:
        raise ValueError("recipe: `model` (the starting checkpoint, e.g. the Stage III model) is not set")
    out = Path(out)
    qsum = recipe.questions.build(out / "questions")
    teacher, rounds = recipe.model, []
    for r in range(recipe.iterate.rounds):
        rdir = out / f"round{r}"
        report = synthesise(out / "questions" / SFT_POOL_FILE, teacher, rdir / "synth", recipe.synth,
                            show_progress=console is not None)
        start = teacher
        if recipe.sft.enabled and report["sft_rows"]:
            start = run_sft(teacher, rdir / "synth", rdir / "sft", recipe.sft, recipe.grpo.seed, console)
        grpo = train_grpo(start, out / "questions" / RL_FILE, rdir / "grpo", recipe.grpo)
        rounds.append({"round": r, "teacher": str(teacher), "synth": {k: report[k] for k in
                       ("questions", "sft_rows", "teacher_rows", "template_rows")},
                       "pass@k": report["by"]["all"]["all"][f"pass@{recipe.synth.k}"],
                       "acceptance_rate": report["by"]["all"]["all"]["acceptance_rate"],
                       "sft_model": str(start), "grpo_model": grpo["final"], "grpo_first": grpo["first"],
                       "grpo_last": grpo["last"]})
        teacher = grpo["final"]
    summary = {"questions": qsum, "rounds": rounds, "final": str(teacher), "recipe": asdict(recipe)}
    (out / "iterate-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
