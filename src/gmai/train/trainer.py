"""The three-stage trainer (plus the tiny preset's optional LM warm-up, "stage 0").

A plain PyTorch loop on top of ``accelerate``: the same code runs as one process, under
``accelerate launch`` / ``torchrun`` (DDP; gloo on CPU), or sharded with FSDP2, which the trainer drives itself
(``gmai.train.sharding``; launch config ``recipes/accelerate/fsdp.yaml``). The data order of a stage is a
deterministic plan computed identically on every rank (``packing.plan_steps``); each rank computes its slice of
every global batch, and the loss is normalised by the supervised-token count of the *global* batch, so N
processes reach the same update as one process with the same global batch.

Each stage writes ``OUT/stageK`` (a standard HF checkpoint + README), resumable step checkpoints
under ``OUT/checkpoints/stageK/step-N`` (model, optimizer, scheduler, RNG, data position), and
log lines to ``OUT/metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gmai.train.config import StageConfig, TrainConfig
from gmai.train.data import (Sample, corpus_texts, load_samples, quality_filter, questions_per_image,
                             sample_mixture, short_answer_form)
from gmai.train.logs import MetricsLog, plot_curves
from gmai.train.packing import IGNORE, Encoded, Encoder, collate, plan_steps, prepare
from gmai.train.sharding import Fsdp, fsdp_from_launch

DONE_FILE = "gmai_stage.json"  # written last into OUT/stageK: the stage is complete
# Test/debug hooks (fault injection), read from the environment so a subprocess can be told:
CRASH_AFTER_STEP = "GMAI_TRAIN_CRASH_AFTER_STEP"  # hard-exit (like a kill) after this optimizer step
NAN_AT_STEP = "GMAI_TRAIN_NAN_AT_STEP"  # make the loss NaN at this optimizer step


class TrainingDiverged(RuntimeError):
    pass


def set_torch_threads(requested: int) -> int:
    """One compute thread per core, shared among the local processes (oversubscription kills CPU speed)."""
    import torch

    if requested <= 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        requested = max(1, cores // max(1, local))
    torch.set_num_threads(requested)
    return requested


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_ratio: float):
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- model start points

def _stage_dir(out: Path, k: int) -> Path:
    return out / f"stage{k}"


def is_complete(out: Path, k: int) -> bool:
    return (_stage_dir(out, k) / DONE_FILE).is_file()


def start_point(cfg: TrainConfig, out: Path, k: int, first_of_run: bool = False) -> Path | None:
    """The checkpoint stage k starts from.

    ``model.init_from`` or ``model.base`` (a whole VLM of a supported family) starts the first stage of this
    invocation, e.g. Stage III from a
    Stage I checkpoint for the paper's I+III ablation. Otherwise: the nearest earlier enabled stage's
    folder in OUT, or a fresh model from the preset when k is the first enabled stage.
    """
    if first_of_run and (cfg.model.init_from or cfg.model.base):
        return Path(cfg.model.init_from or cfg.model.base)
    earlier = [j for j in cfg.enabled_stages() if j < k]
    if not earlier:
        return None
    prev = earlier[-1]
    if not is_complete(out, prev):
        raise FileNotFoundError(f"stage {k} starts from stage {prev}'s checkpoint, but {_stage_dir(out, prev)} "
                                f"is missing or incomplete: run stage {prev} first (--stages {prev},{k}), or "
                                f"start from another checkpoint with model.init_from=PATH")
    return _stage_dir(out, prev)


def load_start_model(cfg: TrainConfig, start: Path | None, samples: list[Sample]):
    """The stage's model: a previous checkpoint, a whole VLM (``model.base``), or a fresh model from the preset
    (tiny from scratch; the paper's model from pretrained parts)."""
    from gmai.model import create_model, load_checkpoint

    if start is not None:
        model, processor = load_checkpoint(start, trust_remote_code=cfg.model.trust_remote_code)
    else:
        model, processor = create_model(preset_for(cfg), corpus=corpus_texts(samples), seed=cfg.run.seed)
    if getattr(model.config, "_attn_implementation", None) != cfg.model.attn_implementation:
        model.set_attn_implementation(cfg.model.attn_implementation)
    model.config.use_cache = False
    return model, processor


def preset_for(cfg: TrainConfig):
    """The recipe's preset with its overrides: part folders, remote-code consent, tokenizer size (tiny)."""
    from dataclasses import replace

    from gmai.model import get_preset

    preset = get_preset(cfg.model.preset)
    if cfg.model.vision_path or cfg.model.llm_path:
        preset = preset.with_paths(cfg.model.vision_path, cfg.model.llm_path)
    preset = replace(preset, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.tokenizer_vocab_size:
        preset = replace(preset, tokenizer_vocab_size=cfg.model.tokenizer_vocab_size)
    return preset


# ---------------------------------------------------------------- data per stage

def stage_samples(stage: StageConfig, cfg: TrainConfig, samples: list[Sample]) -> tuple[list[Sample], dict]:
    chosen, mixture = sample_mixture(samples, stage.mixture, cfg.run.seed)
    report: dict = {"mixture": mixture}
    if stage.quality_filter:
        chosen, dropped = quality_filter(chosen, cfg.data)
        report["quality_dropped"] = dict(dropped)
    if stage.short_answer_share > 0:
        chosen, forms = short_answer_form(chosen, stage.short_answer_share, cfg.run.seed)
        report["short_answers"] = dict(forms)
    if stage.questions_per_image > 1:
        chosen, merged = questions_per_image(chosen, stage.questions_per_image, cfg.run.seed)
        report["questions_per_image"] = dict(sorted(merged.items()))
    return chosen, report


def encode_stage(stage: StageConfig, cfg: TrainConfig, samples: list[Sample], encoder: Encoder
                 ) -> tuple[list[Encoded], dict]:
    if stage.kind == "lm_warmup":
        texts = corpus_texts(samples)
        encoded = [encoder.encode_text(t, f"corpus:{i}") for i, t in enumerate(texts)]
        report = {"warmup_texts": len(texts)}
    else:
        chosen, report = stage_samples(stage, cfg, samples)
        encoded = [encoder.encode(s) for s in chosen]
    kept, dropped = prepare(encoded, stage.max_length, stage.truncate, encoder.image_token_id)
    report["length_dropped"] = dict(dropped)
    report["samples"] = len(kept)
    if not kept:
        raise ValueError(f"stage {stage.name}: no training sample left (report: {report})")
    return kept, report


# ---------------------------------------------------------------- optimisation pieces

def setup_trainable(model, stage: StageConfig):
    from gmai.model.freeze import apply_freeze_plan, count_parameters

    if not stage.lora.enabled:
        apply_freeze_plan(model, stage.trainable)
        return model, count_parameters(model)
    if "llm" not in stage.trainable:
        raise ValueError(f"{stage.name}: lora.enabled needs 'llm' among the trainable parts (LoRA adapts the LM)")
    if stage.lora.quantize_4bit:
        check_qlora_available()
    from peft import LoraConfig, get_peft_model

    others = [p for p in stage.trainable if p != "llm"]
    targets = "|".join(stage.lora.target_modules)
    lora = LoraConfig(r=stage.lora.r, lora_alpha=stage.lora.alpha, lora_dropout=stage.lora.dropout,
                      target_modules=rf".*language_model.*\.({targets})")
    model = get_peft_model(model, lora)  # freezes every base weight, adds trainable adapters
    from gmai.model.freeze import model_parts

    for name in others:
        for module in model_parts(model)[name]:
            for p in module.parameters():
                p.requires_grad_(True)
    return model, count_parameters(model)


def check_packing(model, stage: StageConfig, k: int) -> None:
    from gmai.model.families import family_of

    family = family_of(model)
    if stage.packing and not family.packing:
        raise ValueError(f"stage {k}: packing is not supported for {family.name} (its M-RoPE positions come from "
                         f"the image grid); set stages.{k}.packing=false")


def unpacked(batch: dict, lengths: list[int]) -> dict:
    """One sample per row: the model derives its own positions (M-RoPE) from an attention mask over the padding."""
    import torch

    batch.pop("position_ids")
    width = batch["input_ids"].shape[1]
    batch["attention_mask"] = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return batch


def check_qlora_available() -> None:
    """QLoRA = 4-bit base weights via bitsandbytes, which needs a CUDA GPU. Say so instead of failing later."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("QLoRA (lora.quantize_4bit=true) needs a CUDA GPU and bitsandbytes; this machine has no "
                           "GPU. Use plain LoRA (lora.enabled=true, lora.quantize_4bit=false) or full training.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RuntimeError("QLoRA needs bitsandbytes: pip install bitsandbytes") from None


def make_optimizer(model, stage: StageConfig):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{stage.name}: nothing to train (trainable={stage.trainable})")
    return torch.optim.AdamW(params, lr=stage.lr, betas=(stage.adam_beta1, stage.adam_beta2), eps=stage.adam_eps,
                             weight_decay=stage.weight_decay)


def token_loss_sum(model, batch):
    """Summed next-token cross-entropy over supervised tokens (normalised by the caller).

    The LM head runs only where a label follows (``logits_to_keep`` as a boolean mask): image and
    prompt positions, most of a LLaVA sequence, never materialise vocabulary-sized logits.
    """
    import torch.nn.functional as F

    labels = batch.pop("labels")
    targets = labels[:, 1:]
    keep = targets != IGNORE
    keep_mask = F.pad(keep, (0, 1), value=False)  # position t predicts label t+1
    logits = model(**batch, use_cache=False, logits_to_keep=keep_mask).logits  # (n_supervised, vocab)
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


# ---------------------------------------------------------------- checkpoints

def _ckpt_root(out: Path, k: int) -> Path:
    return out / "checkpoints" / f"stage{k}"


def latest_checkpoint(out: Path, k: int) -> Path | None:
    root = _ckpt_root(out, k)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_step_checkpoint(run: StageRun, step: int) -> Path:
    """model + optimizer + scheduler + RNG (accelerate, or sharded under FSDP) and our trainer state, written
    atomically."""
    accelerator, out, k, state, keep = run.accelerator, run.out, run.k, run.state, run.stage.keep_checkpoints
    root = _ckpt_root(out, k)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if run.fsdp:
        from gmai.train.sharding import save_sharded_state

        save_sharded_state(tmp, run.model, run.optimizer, run.scheduler, accelerator.process_index)
    else:
        accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        olds = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in olds[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_stage_model(accelerator, model, processor, path: Path, lora: bool, fsdp: Fsdp | None = None) -> None:
    """The stage's result as a standard HF checkpoint (LoRA adapters merged into the LM)."""
    from gmai.model import save_checkpoint

    if fsdp:
        return save_sharded_stage_model(accelerator, model, processor, path)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # gathers FSDP/ZeRO-3 shards (all ranks must call)
    if accelerator.is_main_process:
        if lora:
            unwrapped = unwrapped.merge_and_unload()
            state_dict = None
        path.mkdir(parents=True, exist_ok=True)
        if state_dict is not None and accelerator.distributed_type.name in ("FSDP", "DEEPSPEED"):
            unwrapped.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
            from gmai.model.families import save_processor

            save_processor(processor, path)
        else:
            save_checkpoint(unwrapped, processor, path)
    accelerator.wait_for_everyone()


def save_sharded_stage_model(accelerator, model, processor, path: Path) -> None:
    """FSDP: the full state dict gathered on rank 0, saved as one safetensors HF checkpoint."""
    from gmai.model.families import save_processor
    from gmai.train.sharding import full_state_dict, save_pretrained_full

    state_dict = full_state_dict(model)  # collective: every rank calls
    if accelerator.is_main_process:
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained_full(model, state_dict, path)
        save_processor(processor, path)
    accelerator.wait_for_everyone()


def write_stage_readme(path: Path, k: int, stage: StageConfig, info: dict) -> None:
    lines = [f"# gmai checkpoint: stage {k} ({stage.name})", ""]
    if stage.kind == "lm_warmup":
        lines += ["**This is a text-only warm-up of the language model (stage 0), not a stage of the paper.**",
                  "The tiny preset starts from random weights; real runs start from a pretrained LM and skip it. "
                  "It trains the LM as a plain language model on the training corpus text.", ""]
    if info.get("warmup_before"):
        lines += [f"Trained after a text-only LM warm-up (stage 0): {info['warmup_before']}.", ""]
    lines += [f"- trainable parts: {', '.join(stage.trainable)} (LoRA: {stage.lora.enabled})",
              f"- trainable parameters: {info['params']['trainable']['total']:,} of "
              f"{info['params']['all']['total']:,}",
              f"- optimizer steps: {info['steps']}, lr {stage.lr} (AdamW betas {stage.adam_beta1}, "
              f"{stage.adam_beta2}; cosine with warm-up)",
              f"- loss: first {info['first_loss']:.4f} -> last {info['last_loss']:.4f} (mean of the first tenth "
              f"of the steps {info['loss_first_avg']:.4f} -> last tenth {info['loss_last_avg']:.4f})",
              f"- data: {json.dumps(info['data'])}",
              "", "Loads with plain transformers: `AutoModelForImageTextToText.from_pretrained(path)` and "
              "`AutoProcessor.from_pretrained(path)`; the chat template used in training is saved here."]
    (path / "README.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- the stage loop

def make_accelerator(mixed_precision: str = "no"):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # cpu=True on a machine without CUDA makes torchrun/accelerate launch use data parallel over gloo.
    # A micro-batch of text-only rows leaves the vision tower unused: DDP must allow unused parameters.
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def shared_encoder(encoders: dict, processor) -> Encoder:
    """Stages that load the same tokenizer, template and image processor reuse one encoder (and its caches):
    re-rendering thousands of samples per stage costs more than a short stage on the tiny model."""
    key = (processor.chat_template, json.dumps(processor.tokenizer.get_vocab(), sort_keys=True),
           processor.image_processor.to_json_string())
    if key not in encoders:
        encoders[key] = Encoder(processor)
    return encoders[key]


@dataclass
class StageRun:
    """What the steps of one stage share; built once by ``prepare_stage``."""

    k: int
    stage: StageConfig
    cfg: TrainConfig
    out: Path
    accelerator: object
    log: MetricsLog
    console: object
    start: Path | None
    model: object
    processor: object
    encoder: Encoder
    encoded: list[Encoded]
    data_report: dict
    plan: list
    params: dict
    optimizer: object
    scheduler: object
    warmup: int
    fsdp: Fsdp | None = None
    state: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.plan)


def run_stage(k: int, cfg: TrainConfig, out: Path, samples: list[Sample], accelerator, log: MetricsLog, console,
              first_of_run: bool = False, encoders: dict | None = None, fsdp: Fsdp | None = None) -> dict:
    """One stage: build the model, data plan and optimizer; resume or start; train every step; save."""
    run = prepare_stage(k, cfg, out, samples, accelerator, log, console, first_of_run, encoders, fsdp)
    restore_or_start(run)
    train_steps(run)
    return finish_stage(run)


def prepare_stage(k: int, cfg: TrainConfig, out: Path, samples: list[Sample], accelerator, log: MetricsLog, console,
                  first_of_run: bool, encoders: dict | None, fsdp: Fsdp | None = None) -> StageRun:
    stage = cfg.stages[k]
    start = start_point(cfg, out, k, first_of_run)
    model, processor = load_start_model(cfg, start, samples)
    encoder = shared_encoder(encoders if encoders is not None else {}, processor)
    encoded, data_report = encode_stage(stage, cfg, samples, encoder)
    plan = plan_steps(encoded, seed=cfg.run.seed + k, max_length=stage.max_length, packing=stage.packing,
                      group_by_length=stage.group_by_length, per_device_batch_size=stage.per_device_batch_size,
                      grad_accum=stage.grad_accum, world_size=accelerator.num_processes, epochs=stage.epochs,
                      max_steps=stage.max_steps)
    # An epoch's last incomplete global batch is left out (every rank must get the same number of rows), and
    # max_steps may stop earlier: report how many samples the first epoch really used.
    data_report["first_epoch_samples_used"] = sum(len(row) for st in plan if st.epoch == 0
                                                  for rank in st.micro for mb in rank for row in mb)
    check_packing(model, stage, k)
    model, params = setup_trainable(model, stage)
    model.train()
    if fsdp:  # sharded before the optimizer exists: it must hold the sharded parameters
        from gmai.train.sharding import shard_model

        shard_model(model, fsdp, accelerator.device)
    optimizer = make_optimizer(model, stage)
    warmup = stage.warmup_steps or int(round(stage.warmup_ratio * len(plan)))
    scheduler = cosine_with_warmup(optimizer, warmup, len(plan), stage.min_lr_ratio)
    if not fsdp:
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)
    return StageRun(k, stage, cfg, out, accelerator, log, console, start, model, processor, encoder, encoded,
                    data_report, plan, params, optimizer, scheduler, warmup, fsdp)


def restore_or_start(run: StageRun) -> None:
    """Resume from the latest step checkpoint (model, optimizer, scheduler, RNG, position), or seed a fresh start."""
    import random as pyrandom

    import numpy as np
    import torch

    k, stage, log, console = run.k, run.stage, run.log, run.console
    run.state = {"stage": k, "step": 0, "tokens": 0, "samples": 0, "elapsed_s": 0.0, "first_loss": None,
                 "last_loss": None, "losses": []}
    resume = latest_checkpoint(run.out, k)
    if resume is not None and run.fsdp:
        from gmai.train.sharding import load_sharded_state

        load_sharded_state(resume, run.model, run.optimizer, run.scheduler, run.accelerator.process_index)
    elif resume is not None:
        run.accelerator.load_state(str(resume))
    if resume is not None:
        run.state = json.loads((resume / "trainer_state.json").read_text())
        log.event(event="resume", stage=k, step=run.state["step"], checkpoint=str(resume))
        if console:
            console.print(f"[yellow]stage {k}: resuming from {resume} (step {run.state['step']}/{run.total})")
    else:
        seed = run.cfg.run.seed + k
        torch.manual_seed(seed)
        pyrandom.seed(seed)
        np.random.seed(seed)
        log.event(event="stage_start", stage=k, name=stage.name, kind=stage.kind,
                  start_from=str(run.start or "scratch"), trainable=stage.trainable, params=run.params,
                  steps=run.total, warmup_steps=run.warmup, world_size=run.accelerator.num_processes, data=run.data_report, config=asdict(stage))
    if console:
        console.print(f"[bold]stage {k} ({stage.name})[/]: {len(run.encoded)} samples, {run.total} steps, trainable "
                      f"{run.params['trainable']['total']:,}/{run.params['all']['total']:,} params "
                      f"({', '.join(stage.trainable)}), start: {run.start or 'scratch'}")


def train_steps(run: StageRun) -> None:
    crash_after = int(os.environ.get(CRASH_AFTER_STEP, "0") or 0)
    nan_at = int(os.environ.get(NAN_AT_STEP, "0") or 0)
    progress = _progress(run.console, run.k, run.total, run.state["step"]) if run.accelerator.is_main_process else None
    t_stage = time.perf_counter() - run.state["elapsed_s"]
    try:
        for step_index in range(run.state["step"], run.total):
            t0 = time.perf_counter()
            totals = accumulate_gradients(run, step_index, poison=nan_at == step_index + 1)
            step_loss, grad_norm, lr = apply_update(run, totals, step_index)
            values = record_step(run, step_index, totals, step_loss, grad_norm, lr, time.perf_counter() - t0,
                                 time.perf_counter() - t_stage)
            if progress:
                progress[0].update(progress[1], completed=run.state["step"],
                                   description=f"stage {run.k} loss {step_loss:.3f} lr {lr:.1e} "
                                               f"{values['tokens_per_s']:.0f} tok/s")
            step = run.state["step"]
            if run.stage.save_every and step % run.stage.save_every == 0 and step < run.total:
                save_step_checkpoint(run, step)
            if crash_after and step == crash_after:
                os._exit(137)  # simulate a kill: no cleanup, no final checkpoint
    finally:
        if progress:
            progress[0].stop()


def accumulate_gradients(run: StageRun, step_index: int, poison: bool = False):
    """Forward + backward over this rank's micro-batches of one global step. Returns the summed
    (loss, tokens, samples) over all ranks. The loss is normalised by the supervised tokens of the whole
    global batch, so k micro-batches give the same gradient as one batch k times larger."""
    import torch

    from gmai.model.families import image_token_types

    accelerator, model, encoded = run.accelerator, run.model, run.encoded
    step_plan, device, world = run.plan[step_index], accelerator.device, accelerator.num_processes
    loss_sum = torch.zeros((), device=device)
    tokens = samples_n = 0
    micro = step_plan.micro[accelerator.process_index]
    for m, rows in enumerate(micro):
        batch = collate(rows, encoded, run.encoder.pixels, run.processor.tokenizer.pad_token_id)
        if not run.stage.packing:
            batch = unpacked(batch, [sum(len(encoded[i]) for i in row) for row in rows])
        batch.update(image_token_types(model, batch["input_ids"]))
        tokens += int(sum(len(encoded[i]) for row in rows for i in row))
        samples_n += sum(len(row) for row in rows)
        batch = {key: v.to(device) for key, v in batch.items()}
        sync = m == len(micro) - 1
        ctx = _gradient_sync(run, sync)
        with ctx, accelerator.autocast():
            loss = token_loss_sum(model, batch)
            if poison:
                loss = loss * float("nan")
            # global-batch normalisation; DDP and FSDP average gradients over ranks, hence * world
            accelerator.backward(loss * world / step_plan.n_label_tokens)
        loss_sum += loss.detach()
    return accelerator.reduce(torch.stack([loss_sum, torch.tensor(float(tokens), device=device),
                                           torch.tensor(float(samples_n), device=device)]), "sum")


def _gradient_sync(run: StageRun, sync: bool):
    """Reduce gradients over ranks only on a step's last micro-batch."""
    if run.fsdp:
        from gmai.train.sharding import set_gradient_sync

        set_gradient_sync(run.model, sync)
        return _nullcontext()
    if sync or run.accelerator.num_processes == 1:
        return _nullcontext()
    return run.accelerator.no_sync(run.model)


def apply_update(run: StageRun, totals, step_index: int) -> tuple[float, float, float]:
    """Stop before a non-finite update; else clip, step optimizer and scheduler. Returns (loss, grad norm, lr)."""
    step_loss = (totals[0] / run.plan[step_index].n_label_tokens).item()
    if not math.isfinite(step_loss):
        last = latest_checkpoint(run.out, run.k)
        raise TrainingDiverged(
            f"stage {run.k} ({run.stage.name}), step {step_index + 1}/{run.total}: the loss is {step_loss}; training "
            f"stopped before this update. Last good checkpoint: "
            f"{last or (run.start if run.start else 'none (no step checkpoint yet)')}. Lower the learning rate "
            f"(stages.{run.k}.lr) and rerun the same command to resume from it.")
    if run.fsdp:
        from gmai.train.sharding import clip_grad_norm, drop_unused_grads

        drop_unused_grads(run.model)
        grad_norm = clip_grad_norm(run.model, run.stage.max_grad_norm)
    else:
        grad_norm = run.accelerator.clip_grad_norm_(run.model.parameters(), run.stage.max_grad_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm, lr


def record_step(run: StageRun, step_index: int, totals, step_loss: float, grad_norm: float, lr: float, dt: float,
                elapsed: float) -> dict:
    """Update the resumable state and log the step (metrics.jsonl; one console line when logging to a file)."""
    state, k = run.state, run.k
    state["step"] = step_index + 1
    state["tokens"] += int(totals[1].item())
    state["samples"] += int(totals[2].item())
    state["first_loss"] = step_loss if state["first_loss"] is None else state["first_loss"]
    state["last_loss"] = step_loss
    state["losses"].append(step_loss)
    state["elapsed_s"] = elapsed
    values = {"loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": totals[1].item() / dt,
              "samples_per_s": totals[2].item() / dt, "tokens": state["tokens"], "epoch": run.plan[step_index].epoch}
    if state["step"] % max(1, run.stage.log_every) == 0 or state["step"] == run.total:
        run.log.step(k, state["step"], values)
        if run.console is not None and not run.console.is_terminal:  # logs to a file: one line per log step
            run.console.print(f"stage {k} step {state['step']}/{run.total} loss {step_loss:.4f} lr {lr:.2e} "
                              f"grad_norm {grad_norm:.3f} {values['tokens_per_s']:.0f} tok/s "
                              f"{values['samples_per_s']:.1f} samples/s")
    return values


def finish_stage(run: StageRun) -> dict:
    """Replica check (data parallel), the stage's HF checkpoint + README + done marker, step checkpoints cleared."""
    accelerator, k, out, state = run.accelerator, run.k, run.out, run.state
    log_parallel_check(run)
    final = _stage_dir(out, k)
    t_save = time.perf_counter()
    save_stage_model(accelerator, run.model, run.processor, final, run.stage.lora.enabled, run.fsdp)
    info = {"save_s": round(time.perf_counter() - t_save, 3), "steps": run.total, "first_loss": state["first_loss"],
            "last_loss": state["last_loss"], "params": run.params,
            "data": run.data_report, "tokens": state["tokens"], "samples": state["samples"],
            "elapsed_s": round(state["elapsed_s"], 2), "start_from": str(run.start or "scratch"),
            "warmup_before": _warmup_note(run.cfg, k), **loss_trend(state["losses"])}
    if accelerator.is_main_process:
        write_stage_readme(final, k, run.stage, info)
        (final / DONE_FILE).write_text(json.dumps({"stage": k, "name": run.stage.name, **info}, indent=1, default=str))
        if not run.cfg.run.keep_step_checkpoints:
            shutil.rmtree(_ckpt_root(out, k), ignore_errors=True)
            if (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir()):
                (out / "checkpoints").rmdir()
    run.log.event(event="stage_end", stage=k, name=run.stage.name, checkpoint=str(final), **info)
    accelerator.wait_for_everyone()
    return info


def loss_trend(losses: list[float]) -> dict:
    """Did the loss fall? Mean of the first vs the last tenth of the steps (single steps are noisy)."""
    if not losses:
        return {}
    n = max(1, len(losses) // 10)
    first, last = sum(losses[:n]) / n, sum(losses[-n:]) / n
    return {"loss_first_avg": first, "loss_last_avg": last, "loss_fell": last < first}


def log_parallel_check(run: StageRun) -> None:
    """Evidence of what the processes held: identical replicas (data parallel) or each rank's shard (FSDP)."""
    accelerator, k = run.accelerator, run.k
    if run.fsdp:
        import torch

        from gmai.train.sharding import shard_report

        mine = shard_report(run.model)
        keys = sorted(mine)
        rows = accelerator.gather(torch.tensor([[float(mine[key]) for key in keys]], device=accelerator.device))
        run.log.event(event="shard_check", stage=k, ranks=[dict(zip(keys, map(int, row))) for row in rows.tolist()])
        return
    replicas = replica_checksums(accelerator, run.model)
    if replicas is not None:
        run.log.event(event="replica_check", stage=k, checksums=replicas,
                      in_sync=all(r == replicas[0] for r in replicas))


def replica_checksums(accelerator, model) -> list[list[float]] | None:
    """Data parallel only: each rank's (sum, sum of squares) of all weights; equal rows = replicas in sync."""
    import torch

    if accelerator.num_processes == 1 or accelerator.distributed_type.name not in ("MULTI_CPU", "MULTI_GPU"):
        return None
    params = [p.detach().double() for p in accelerator.unwrap_model(model).parameters()]
    local = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)]).to(accelerator.device)
    return accelerator.gather(local[None]).cpu().tolist()


def _warmup_note(cfg: TrainConfig, k: int) -> str:
    zero = cfg.stages.get(0)
    if k > 0 and zero is not None and zero.enabled and zero.kind == "lm_warmup":
        return "stage 0 trained the LM alone on the corpus text before Stage I"
    return ""


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(console, k: int, total: int, done: int):
    if console is None or not console.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    task = progress.add_task(f"stage {k}", total=total, completed=done)
    progress.start()
    return progress, task


# ---------------------------------------------------------------- entry point

def train(cfg: TrainConfig, data_dir, out: str | Path, stages: list[int] | None = None, console=None) -> dict:
    """Run the requested (default: all enabled) stages in order. Returns a summary per stage.

    ``data_dir``: one data folder written by ``gmai data build`` or a list of them (read together).
    """
    data_dirs = [Path(d) for d in data_dir] if isinstance(data_dir, (list, tuple)) else [Path(data_dir)]
    out = Path(out)
    threads = set_torch_threads(cfg.run.torch_threads)
    wanted = stages or cfg.enabled_stages()
    unknown = [k for k in wanted if k not in cfg.stages]
    if unknown:
        raise ValueError(f"stage(s) {unknown} are not in the recipe (it has {sorted(cfg.stages)})")
    fsdp = fsdp_from_launch()  # before accelerate reads the launch settings
    accelerator = make_accelerator(cfg.run.mixed_precision)
    log = MetricsLog(out, accelerator.is_main_process, cfg.run.tensorboard)
    samples, counts = load_samples(data_dirs, cfg.data)
    groups = Counter(s.group for s in samples)
    log.event(event="run_start", data=[str(d) for d in data_dirs], stages=wanted, world_size=accelerator.num_processes,
              distributed=accelerator.distributed_type.name, sharding="fsdp2" if fsdp else None,
              torch_threads=threads, records=dict(counts), groups=dict(groups), config=cfg.to_dict())
    if console and accelerator.is_main_process:
        console.print(f"data: {len(samples)} training samples from {', '.join(map(str, data_dirs))} "
                      f"({dict(counts)}); groups "
                      f"{dict(groups)}; {accelerator.num_processes} process(es) x {threads} thread(s)")
    summary = {}
    shown = console if accelerator.is_main_process else None
    first = True
    encoders: dict = {}
    try:
        for k in wanted:
            if is_complete(out, k):
                if shown:
                    shown.print(f"stage {k}: {_stage_dir(out, k)} is complete; skipping (delete it to retrain)")
                summary[k] = json.loads((_stage_dir(out, k) / DONE_FILE).read_text())
                continue
            accelerator.free_memory()
            accelerator = make_accelerator(cfg.run.mixed_precision)  # fresh per stage: new model/optimizer/state
            summary[k] = run_stage(k, cfg, out, samples, accelerator, log, shown, first_of_run=first,
                                   encoders=encoders, fsdp=fsdp)
            first = False
            if cfg.run.plot and accelerator.is_main_process:
                plot_curves(out)
    finally:
        log.close()
    return summary
