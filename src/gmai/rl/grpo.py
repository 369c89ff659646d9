"""GRPO for vision-language checkpoints on TRL's ``GRPOTrainer``, with verifiable medical rewards.

A config dataclass and a trainer, TRL-style: :class:`R1GRPOConfig` (recipe section ``grpo:``) and
:class:`R1GRPOTrainer` (a thin ``GRPOTrainer`` subclass). What the subclass adds:

- **vision features once per group** (``cache_vision``): a GRPO batch holds each prompt
  ``num_generations`` times, so stock TRL runs the vision tower on the same image once per
  completion, in generation and in every log-prob pass (policy, old policy, reference). We wrap
  the LLaVA model's ``get_image_features`` so identical consecutive images are encoded once and
  their features shared (gradients add up through the shared tensor, so training is unchanged);
- **per-step metrics** (:class:`MetricsCallback`): ``OUT/metrics.jsonl`` with ``reward/<name>``
  per reward function, ``zero_signal_fraction`` (share of groups whose rewards are all equal:
  no advantage, no gradient), completion length and KL, plus PNG plots;
- a standard checkpoint in ``OUT/final`` (LoRA merged), loadable with plain transformers.

Models: our LLaVA checkpoints and any HF image-text-to-text folder TRL supports (Qwen2.5-VL
style checkpoints work the same way: their processor turns the conversational prompt and the
``image`` column into model inputs; ``cache_vision`` only applies to LLaVA-style
``get_image_features`` and is skipped for others). The model is loaded *from its saved folder*:
with ``beta > 0`` TRL rebuilds the reference model from ``config._name_or_path``.

GPU users: ``use_vllm: true`` (``vllm_mode: colocate`` or ``server`` with ``trl vllm-serve``)
moves rollouts to vLLM; ``bf16: true``; bigger ``num_generations`` / ``max_completion_length``.
None of that is needed (or available) on CPU.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gmai.train.logs import METRICS_FILE, read_metrics  # noqa: F401 (read_metrics: the one reader of run metrics)

QUESTION_REWARDS_FILE = "question_rewards.jsonl"


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class R1GRPOConfig:
    """The recipe's ``grpo:`` section (maps onto ``trl.GRPOConfig``)."""

    rewards: dict[str, float] = field(default_factory=lambda: {"format": 0.5, "accuracy": 1.0})
    scoring_rule: str = "gmai@1"  # the evaluation rule the accuracy rewards score under (1.0 = it counts correct)
    num_generations: int = 4  # group size G
    beta: float = 0.04  # KL coefficient (0 = no reference model)
    epsilon: float = 0.2  # PPO-style clipping
    epsilon_high: float | None = None  # DAPO's asymmetric upper clip (None = epsilon)
    loss_type: str = "grpo"  # grpo | dapo | dr_grpo | bnpo (TRL)
    scale_rewards: str = "group"  # group | batch | none (TRL)
    mask_truncated_completions: bool = False  # DAPO: completions cut at max_completion_length get no loss
    max_completion_length: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 8  # completions per micro-batch (a multiple of num_generations)
    gradient_accumulation_steps: int = 1
    num_iterations: int = 1  # PPO epochs per generation batch (mu)
    max_steps: int = 20  # <= 0: run num_train_epochs over the questions instead
    num_train_epochs: float = 1.0
    max_questions: int = 0  # 0 = all questions in the file
    answer_types: list[str] = field(default_factory=list)  # keep only these answer types ([] = all)
    cache_vision: bool = True  # encode each image once per group in log-prob passes
    share_prefill: bool = True  # generation: image + prompt prefilled once per group, KV cache shared
    lora: LoraSection = field(default_factory=LoraSection)
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    bf16: bool | None = None  # None = on when a CUDA GPU is present
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1
    torch_threads: int = 0  # 0 = leave torch's default
    plot: bool = True

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "grpo") -> "R1GRPOConfig":
        raw = dict(raw or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        if "lora" in raw:
            lora_raw = raw["lora"] or {}
            bad = set(lora_raw) - set(LoraSection.__dataclass_fields__)
            if bad:
                raise ValueError(f"{where}.lora: unknown key(s) {sorted(bad)}")
            raw["lora"] = LoraSection(**lora_raw)
        for key in ("learning_rate", "beta", "epsilon", "temperature", "top_p", "weight_decay", "max_grad_norm"):
            if key in raw:
                raw[key] = float(raw[key])  # YAML 1.1 reads 1e-5 as a string
        return cls(**raw)

    def trl_config(self, out: Path, use_cpu: bool):
        from trl import GRPOConfig

        bf16 = (not use_cpu) if self.bf16 is None else self.bf16
        return GRPOConfig(
            output_dir=str(out / "trl"), use_cpu=use_cpu, bf16=bf16, seed=self.seed, report_to=[],
            num_generations=self.num_generations, beta=self.beta, epsilon=self.epsilon,
            epsilon_high=self.epsilon_high if self.epsilon_high is not None else self.epsilon,
            loss_type=self.loss_type, scale_rewards=self.scale_rewards,
            mask_truncated_completions=self.mask_truncated_completions,
            max_completion_length=self.max_completion_length, temperature=self.temperature, top_p=self.top_p,
            learning_rate=self.learning_rate, lr_scheduler_type=self.lr_scheduler_type, warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, num_iterations=self.num_iterations,
            max_steps=self.max_steps if self.max_steps > 0 else -1, num_train_epochs=self.num_train_epochs,
            logging_steps=self.logging_steps,
            save_strategy="no", use_vllm=self.use_vllm, vllm_mode=self.vllm_mode,
            gradient_checkpointing=self.gradient_checkpointing, remove_unused_columns=False,
            reward_weights=list(self.rewards.values()), log_completions=False, dataloader_num_workers=0)


# ---------------------------------------------------------------------------------------------
# Data: RL questions -> a TRL dataset (conversational prompt + image + reward columns)
# ---------------------------------------------------------------------------------------------

REWARD_COLUMNS = ("answer", "answer_type", "options", "tolerance", "question_type", "source", "modality", "id")


def rl_dataset(questions_path: str | Path, max_questions: int = 0, answer_types: list[str] | None = None):
    """``datasets.Dataset`` with ``prompt`` (one user turn; TRL inserts the image), ``image`` and the
    columns the rewards read (``answer``, ``answer_type``, ``options``, ``tolerance``, ...)."""
    from datasets import Dataset, Features, Image, Sequence, Value

    from gmai.rl.questions import load_questions

    questions = load_questions(questions_path)
    if answer_types:
        questions = [q for q in questions if q.answer_type in answer_types]
    if max_questions:
        questions = questions[:max_questions]
    if not questions:
        raise ValueError(f"{questions_path}: no questions left for GRPO (answer_types={answer_types})")
    rows = [{"prompt": [{"role": "user", "content": q.prompt(reasoning=True)}], "image": q.image,
             "answer": q.answer, "answer_type": q.answer_type, "options": list(q.options),
             "tolerance": q.tolerance, "question_type": q.question_type, "source": q.source,
             "modality": q.modality, "id": q.id} for q in questions]
    features = Features({"prompt": [{"role": Value("string"), "content": Value("string")}], "image": Image(),
                         "answer": Value("string"), "answer_type": Value("string"),
                         "options": Sequence(Value("string")), "tolerance": Value("float64"),
                         "question_type": Value("string"), "source": Value("string"),
                         "modality": Value("string"), "id": Value("string")})
    return Dataset.from_list(rows, features=features)


# ---------------------------------------------------------------------------------------------
# Vision features once per group
# ---------------------------------------------------------------------------------------------


def unique_row_index(rows) -> list[int]:
    """For each row of a batch tensor, the index of the first row with identical content. GRPO
    batches hold each prompt (and its image) ``num_generations`` times, in order during generation
    and shuffled in the loss pass, so matching is by content: a cheap fingerprint, then exact equality."""
    index, firsts = [], {}
    flat = rows.reshape(rows.size(0), -1)
    stride = max(1, flat.size(1) // 64)
    sums, probes = flat.float().sum(dim=1).tolist(), flat[:, ::stride].float().sum(dim=1).tolist()
    for i in range(rows.size(0)):
        key = (sums[i], probes[i])
        match = next((j for j in firsts.get(key, []) if torch_equal(flat[i], flat[j])), None)
        if match is None:
            firsts.setdefault(key, []).append(i)
            match = i
        index.append(match)
    return index


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def share_image_features(model) -> bool:
    """Wrap a LLaVA-style ``get_image_features`` so identical consecutive images are encoded once.
    Returns False (and changes nothing) for models without that method."""
    inner = _llava_inner(model)
    if inner is None or getattr(inner, "_gmai_shared_features", False):
        return inner is not None
    original = inner.get_image_features

    def get_image_features(pixel_values=None, **kwargs):
        if pixel_values is None or pixel_values.dim() != 4 or pixel_values.size(0) < 2 \
                or kwargs.get("image_sizes") is not None:
            return original(pixel_values=pixel_values, **kwargs)
        index = unique_row_index(pixel_values)
        firsts = sorted(set(index))
        if len(firsts) == len(index):
            return original(pixel_values=pixel_values, **kwargs)
        out = original(pixel_values=pixel_values[firsts], **kwargs)
        position = {row: i for i, row in enumerate(firsts)}
        features = list(out.pooler_output)
        out.pooler_output = [features[position[row]] for row in index]
        inner._gmai_images_encoded += len(firsts)
        inner._gmai_images_requested += len(index)
        return out

    inner.get_image_features = get_image_features
    inner._gmai_shared_features = True
    inner._gmai_images_encoded = 0
    inner._gmai_images_requested = 0
    return True


def share_prompt_prefill(model) -> bool:
    """Wrap ``model.generate`` so a batch that repeats each prompt (GRPO's ``num_generations``
    copies) runs the prompt -- image encoding and prefill -- once per distinct prompt: the KV cache
    of the distinct prompts is computed, copied to every row of its group, and sampling continues
    from it. Rows then differ only by their sampled tokens, as before.

    Positions follow ``generate``'s own rule for left padding (``cumsum(mask) - 1``), so the cached
    prefix is exactly what ``generate`` would have computed."""
    if getattr(model, "_gmai_shared_prefill", False):
        return True
    original = model.generate

    def generate(input_ids=None, attention_mask=None, pixel_values=None, **kwargs):
        import torch

        if input_ids is None or attention_mask is None or input_ids.size(0) < 2 or input_ids.size(1) < 2 \
                or kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            return original(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, **kwargs)
        rows = input_ids if pixel_values is None else torch.cat(
            [input_ids.float(), pixel_values.reshape(pixel_values.size(0), -1).float()], dim=1) \
            if pixel_values.size(0) == input_ids.size(0) else None
        index = unique_row_index(rows) if rows is not None else list(range(input_ids.size(0)))
        firsts = sorted(set(index))
        if len(firsts) == len(index):
            return original(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, **kwargs)
        prefix_ids, prefix_mask = input_ids[firsts, :-1], attention_mask[firsts, :-1]
        positions = (prefix_mask.long().cumsum(-1) - 1).masked_fill(prefix_mask == 0, 0)
        with torch.no_grad():
            out = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=positions,
                        pixel_values=None if pixel_values is None else pixel_values[firsts], use_cache=True,
                        logits_to_keep=1)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        position = {row: i for i, row in enumerate(firsts)}
        cache.reorder_cache(torch.tensor([position[r] for r in index], device=input_ids.device))
        model._gmai_prompts_prefilled += len(firsts)
        model._gmai_prompts_requested += len(index)
        return original(input_ids=input_ids, attention_mask=attention_mask, cache=cache, **kwargs)

    model.generate = generate
    model._gmai_shared_prefill = True
    model._gmai_prompts_prefilled = 0
    model._gmai_prompts_requested = 0
    return True


def _llava_inner(model):
    """The module that owns ``get_image_features`` and whose forward calls it (``LlavaModel``)."""
    seen = model
    for _ in range(4):  # PeftModel -> LoraModel -> LlavaForConditionalGeneration -> LlavaModel
        if type(seen).__name__ == "LlavaModel":
            return seen
        nxt = getattr(seen, "model", None) or getattr(seen, "base_model", None)
        if nxt is None or nxt is seen:
            break
        seen = nxt
    return None


# ---------------------------------------------------------------------------------------------
# Per-step metrics and plots
# ---------------------------------------------------------------------------------------------


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class MetricsCallback(_trainer_callback_base()):
    """TRL's log dict each step -> one line of ``OUT/metrics.jsonl`` with stable names."""

    def __init__(self, out: Path, reward_names: list[str]):
        self.path = Path(out) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.reward_names = reward_names
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "reward" not in logs:
            return  # the end-of-training summary, not a step
        row = {"step": state.global_step, "elapsed_s": round(time.perf_counter() - self.started, 3),
               "reward": logs.get("reward"), "reward_std": logs.get("reward_std"),
               "zero_signal_fraction": logs.get("frac_reward_zero_std"),
               "completion_length": logs.get("completions/mean_length"),
               "completion_clipped_ratio": logs.get("completions/clipped_ratio"),
               "kl": logs.get("kl"), "loss": logs.get("loss"), "learning_rate": logs.get("learning_rate"),
               "grad_norm": logs.get("grad_norm")}
        for name in self.reward_names:
            row[f"reward/{name}"] = logs.get(f"rewards/{name}/mean")
        with open(self.path, "a") as fh:
            fh.write(json.dumps({k: _finite(v) for k, v in row.items()}) + "\n")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class QuestionRewardLog:
    """Every question's rewards each time GRPO samples it: ``OUT/question_rewards.jsonl``.

    A step's mean reward mixes whichever questions the step drew, so with a few questions per step the
    curve is mostly question-to-question noise. Over several epochs each question is sampled again, and
    comparing a question with itself (first visit vs last, :func:`revisit_summary`) isolates what the
    policy learnt. The wrapped functions are the recipe's, called exactly as TRL calls them.
    """

    def __init__(self, out: Path, funcs: list, weights: list[float], names: list[str]):
        self.path = Path(out) / QUESTION_REWARDS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.funcs, self.weights, self.names = funcs, weights, names
        self.pending: dict[str, list] = {}

    def wrapped(self) -> list:
        return [self._wrap(fn, name) for fn, name in zip(self.funcs, self.names)]

    def _wrap(self, fn, name: str):
        def recorded(completions, **kwargs):
            values = fn(completions, **kwargs)
            self.pending[name] = values
            if len(self.pending) == len(self.names):  # TRL calls every function once per batch, in order
                self._write(kwargs, len(values))
            return values

        recorded.__name__ = name
        return recorded

    def _write(self, kwargs: dict[str, Any], n: int) -> None:
        state = kwargs.get("trainer_state")
        step = getattr(state, "global_step", None)
        ids = list(kwargs.get("id") or [str(i) for i in range(n)])
        totals = [sum(w * v for w, v in ((w, self.pending[k][i]) for w, k in zip(self.weights, self.names))
                      if v is not None) for i in range(n)]  # None = not applicable, as TRL's nansum
        groups: dict[str, list[int]] = {}
        for i, qid in enumerate(ids):
            groups.setdefault(qid, []).append(i)
        with open(self.path, "a") as fh:
            for qid, rows in groups.items():
                per_fn = {k: _mean([self.pending[k][i] for i in rows]) for k in self.names}
                fh.write(json.dumps({"step": step, "id": qid, "reward": _mean([totals[i] for i in rows]),
                                     "rewards": per_fn, "all_equal": len({round(totals[i], 9) for i in rows}) == 1,
                                     "n": len(rows)}) + "\n")
        self.pending = {}


def _mean(values: list) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def question_visits(out: str | Path) -> dict[str, list[dict[str, Any]]]:
    """``OUT/question_rewards.jsonl`` grouped by question id, visits in order ({} when there is no log)."""
    path = Path(out) / QUESTION_REWARDS_FILE
    visits: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        visits.setdefault(row["id"], []).append(row)
    return visits


def accuracy_keys(reward_names: list[str]) -> list[str]:
    """Metric keys of the accuracy-type rewards (``accuracy``, ``accuracy_strict``, ...) in a run."""
    return [f"reward/{name}" for name in reward_names if name.startswith("accuracy")]


def revisit_summary(out: str | Path, key: str = "reward") -> dict[str, Any]:
    """Questions GRPO sampled more than once: reward at the first visit vs the last (paired Wilcoxon
    signed-rank test), and the share of their groups with no learning signal (all rewards equal)."""
    from scipy.stats import wilcoxon

    visits = question_visits(out)
    again = [v for v in visits.values() if len(v) > 1]
    if not again:
        return {"questions": len(visits), "revisited": 0}

    def value(row):
        return row["reward"] if key == "reward" else (row["rewards"].get(key.removeprefix("reward/")) or 0.0)

    first, last = [value(v[0]) for v in again], [value(v[-1]) for v in again]
    diffs = [b - a for a, b in zip(first, last)]
    p_value = float(wilcoxon(diffs).pvalue) if any(diffs) else 1.0
    return {"questions": len(visits), "revisited": len(again), "key": key,
            "first_visit": sum(first) / len(first), "last_visit": sum(last) / len(last),
            "improved": sum(d > 0 for d in diffs), "worsened": sum(d < 0 for d in diffs), "p_value": p_value,
            "zero_signal_first_visit": sum(v[0]["all_equal"] for v in again) / len(again),
            "zero_signal_last_visit": sum(v[-1]["all_equal"] for v in again) / len(again)}


def reward_by_visit(out: str | Path) -> dict[str, list[tuple[float, float, int]]]:
    """Per visit number (1st, 2nd, ... time GRPO sampled a question): (mean, 95% half-width, questions) of the
    total reward and of each reward function, over the questions sampled that many times."""
    visits = question_visits(out)
    keys = ["reward"] + sorted({k for v in visits.values() for row in v for k in row["rewards"]})
    table: dict[str, list[tuple[float, float, int]]] = {k: [] for k in keys}
    for k in range(max((len(v) for v in visits.values()), default=0)):
        rows = [v[k] for v in visits.values() if len(v) > k]
        for key in keys:
            values = [r["reward"] if key == "reward" else r["rewards"].get(key) for r in rows]
            values = [float(x) for x in values if x is not None]
            if values:
                mean = sum(values) / len(values)
                sd = math.sqrt(sum((x - mean) ** 2 for x in values) / max(1, len(values) - 1))
                table[key].append((mean, 1.96 * sd / math.sqrt(len(values)), len(values)))
    return table


def plot_metrics(out: str | Path) -> list[Path]:
    """PNG plots of the reward curves (per step, with an 8-step moving average), the reward per visit of the
    same questions, zero-signal fraction, completion length and KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(out)
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    panels = [("rewards per step", [k for k in rows[0] if k.startswith("reward/")] + ["reward"]),
              ("zero_signal_fraction", ["zero_signal_fraction"]), ("completion_length", ["completion_length"]),
              ("kl", ["kl"])]
    panels = [(t, ks) for t, ks in panels if any(r.get(k) is not None for r in rows for k in ks)]  # no KL at beta 0
    by_visit = reward_by_visit(out)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 3.4))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            values = [math.nan if r.get(key) is None else r[key] for r in rows]
            if all(math.isnan(v) for v in values):
                continue
            line, = ax.plot(steps, values, marker=".", alpha=0.45 if key == "reward" else 1.0, label=key)
            if key == "reward" and len(values) >= 8:
                ax.plot(steps[7:], [sum(values[i - 7:i + 1]) / 8 for i in range(7, len(values))],
                        color=line.get_color(), linewidth=2, label="reward, 8-step mean")
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    ax = axes[-1]
    for key, points in by_visit.items():
        if points:
            visit = list(range(1, len(points) + 1))
            ax.errorbar(visit, [m for m, _, _ in points], yerr=[h for _, h, _ in points], marker="o", capsize=3,
                        label=key)
    ax.set_xticks(range(1, 1 + max((len(p) for p in by_visit.values()), default=1)))
    ax.set_title("same questions, by visit (95% CI)")
    ax.set_xlabel("visit")
    if any(by_visit.values()):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / "grpo-metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


def _grpo_trainer_base():
    from trl import GRPOTrainer

    return GRPOTrainer


class R1GRPOTrainer(_grpo_trainer_base()):
    """``GRPOTrainer`` + vision features shared within a group (``cache_vision``)."""

    def __init__(self, *args, cache_vision: bool = True, share_prefill: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache_vision = cache_vision and share_image_features(self.model)
        if self.cache_vision and getattr(self, "ref_model", None) is not None:
            share_image_features(self.ref_model)
        # vLLM already shares prefixes (prefix caching); the transformers path gets it here.
        self.share_prefill = share_prefill and not self.use_vllm and share_prompt_prefill(self._generation_model())

    def _generation_model(self):
        model = self.accelerator.unwrap_model(self.model)
        return getattr(model, "get_base_model", lambda: model)()

    def vision_stats(self) -> dict[str, int]:
        inner = _llava_inner(self.model)
        gen = self._generation_model()
        return {"images_requested": getattr(inner, "_gmai_images_requested", 0),
                "images_encoded": getattr(inner, "_gmai_images_encoded", 0),
                "prompts_requested": getattr(gen, "_gmai_prompts_requested", 0),
                "prompts_prefilled": getattr(gen, "_gmai_prompts_prefilled", 0)}


def _lora_config(lora: LoraSection):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      task_type="CAUSAL_LM")


def build_trainer(model_path: str | Path, questions_path: str | Path, out: str | Path, config: R1GRPOConfig,
                  trainer_cls=None, extra_callbacks: list | None = None):
    """(trainer, reward names) for a checkpoint folder and an RL question file."""
    import torch

    from gmai.model.factory import load_checkpoint
    from gmai.model.families import family_of
    from gmai.rl.rewards import get_rewards

    out = Path(out)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    use_cpu = not torch.cuda.is_available()
    if config.per_device_train_batch_size % config.num_generations and \
            (config.per_device_train_batch_size * config.gradient_accumulation_steps) % config.num_generations:
        raise ValueError(f"grpo: per_device_train_batch_size x gradient_accumulation_steps "
                         f"({config.per_device_train_batch_size} x {config.gradient_accumulation_steps}) must be a "
                         f"multiple of num_generations ({config.num_generations})")
    model, processor = load_checkpoint(model_path)  # from its folder: TRL rebuilds the reference model from it
    family = family_of(model)
    if not family.grpo:
        raise ValueError(f"grpo: model folder {model_path}: GRPO does not support the {family.name} family yet "
                         f"(its anyres images need image_sizes, which the GRPO batches do not carry)")
    funcs, weights, names = get_rewards(config.rewards, rule=config.scoring_rule)
    funcs = QuestionRewardLog(out, funcs, weights, names).wrapped()
    dataset = rl_dataset(questions_path, config.max_questions, config.answer_types)
    callbacks = [MetricsCallback(out, names)] + list(extra_callbacks or [])
    cls = trainer_cls or R1GRPOTrainer
    kwargs = {"cache_vision": config.cache_vision, "share_prefill": config.share_prefill} \
        if issubclass(cls, R1GRPOTrainer) else {}
    trainer = cls(model=model, reward_funcs=funcs, args=config.trl_config(out, use_cpu), train_dataset=dataset,
                  processing_class=processor, callbacks=callbacks,
                  peft_config=_lora_config(config.lora) if config.lora.enabled else None, **kwargs)
    return trainer, names


def save_final(trainer, out: Path) -> Path:
    """``OUT/final``: a standard checkpoint (LoRA merged into the weights first)."""
    from gmai.model.factory import save_checkpoint

    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    return save_checkpoint(model, trainer.processing_class, out / "final")


def train_grpo(model_path: str | Path, questions_path: str | Path, out: str | Path,
               config: R1GRPOConfig | None = None) -> dict[str, Any]:
    """Run GRPO and write ``OUT/metrics.jsonl``, ``OUT/grpo-metrics.png``, ``OUT/final``,
    ``OUT/grpo-summary.json``. Returns the summary."""
    config = config or R1GRPOConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trainer, names = build_trainer(model_path, questions_path, out, config)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    final = save_final(trainer, out)
    plots = plot_metrics(out) if config.plot else []
    rows = read_metrics(out)
    summary = {"model": str(model_path), "questions": str(questions_path), "final": str(final),
               "steps": len(rows), "train_seconds": round(seconds, 2), "reward_names": names,
               "config": asdict(config), "plots": [str(p) for p in plots],
               "vision": trainer.vision_stats() if isinstance(trainer, R1GRPOTrainer) else {},
               "first": rows[0] if rows else {}, "last": rows[-1] if rows else {},
               "revisits": {key: revisit_summary(out, key) for key in ("reward", *accuracy_keys(names))}}
    (out / "grpo-summary.json").write_text(json.dumps(summary, indent=2))
    return summary
