"""Encoding, packing and collation.

A sample is encoded with the processor's own chat template (the one saved with every checkpoint
and used at inference), so training and inference render the same prompt. Labels keep only the
assistant replies, located by rendering turn by turn (``gmai.model.chat``): released templates
without ``{% generation %}`` markers work unchanged.

Packing puts several whole samples into one row up to ``max_length``. Attention stays inside each
sample because position ids restart at 0 for every sample: with no 2-D attention mask,
transformers derives a block-diagonal causal mask from the position ids (sdpa/eager/flash alike).
Samples are never split, so an image's tokens are never cut; a sample longer than ``max_length``
is dropped with a counted reason (or, with ``truncate``, cut after its image tokens).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image_key: str | None  # key into the pixel cache; None for text-only samples
    sample_id: str
    more_keys: tuple[str, ...] = ()  # the further images of a multi-image sample, in order

    def image_keys(self) -> tuple[str, ...]:
        return ((self.image_key,) if self.image_key is not None else ()) + self.more_keys

    def __len__(self) -> int:
        return len(self.input_ids)


class Encoder:
    """Turns samples into token ids + labels; images are preprocessed once per file and cached."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        self.pixels: dict[str, object] = {}
        self._cache: dict[tuple, Encoded] = {}

    def chat_messages(self, sample, image=None) -> list[dict]:
        """LLaVA turns -> HF chat messages; the image (or each image of a list, in order) becomes a content part
        of the first user turn."""
        messages, placed = [], sample.image is None
        images = image if isinstance(image, list) else [image]
        for m in sample.messages:
            if not placed and m["role"] == "user":
                messages.append({"role": "user", "content": [*({"type": "image", "image": im} for im in images),
                                                             {"type": "text", "text": m["content"]}]})
                placed = True
            else:
                messages.append({"role": m["role"], "content": m["content"]})
        return messages

    def encode(self, sample) -> Encoded:
        """Token ids with the model's own chat template; labels on the assistant replies, found turn by turn
        (``gmai.model.chat``), so released templates without generation markers work as they are."""
        from gmai.model.chat import encode_conversation

        files = tuple(getattr(sample, "images", ()) or ()) or ((sample.image,) if sample.image is not None else ())
        key = (sample.id, sample.subset, files)
        if key in self._cache:
            return self._cache[key]
        image_key, more = None, ()
        if files:
            from PIL import Image

            opened = []
            for file in files:
                with Image.open(file) as im:
                    opened.append(im.copy())
            enc = encode_conversation(self.processor, self.chat_messages(sample, opened if len(opened) > 1
                                                                         else opened[0]), images=opened)
            keys = [str(file) for file in files]
            for one_key, tensors in zip(keys, split_image_tensors(enc, len(keys))):
                self.pixels.setdefault(one_key, tensors)
            image_key, more = keys[0], tuple(keys[1:])
        else:
            enc = encode_conversation(self.processor, self.chat_messages(sample))
        ids, mask = enc["input_ids"], enc["assistant_mask"]
        labels = [t if m else IGNORE for t, m in zip(ids, mask)]
        labels[0] = IGNORE  # never learn a sample's first token from the previous packed sample
        out = Encoded(ids, labels, image_key, sample.id, more)
        self._cache[key] = out
        return out

    def encode_text(self, text: str, sample_id: str) -> Encoded:
        """Plain language modelling on corpus text (the tiny LM's warm-up): every token supervised."""
        ids = self.tokenizer(text + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        return Encoded(list(ids), [IGNORE] + list(ids[1:]), None, sample_id)


def fit_length(enc: Encoded, max_length: int, truncate: bool, image_token_id: int) -> tuple[Encoded | None, str]:
    """The sample as it goes into a row, or None and the reason it cannot fit."""
    if len(enc) <= max_length:
        return enc, ""
    if not truncate:
        return None, f"longer than max_length={max_length}"
    ids = enc.input_ids[:max_length]
    if image_token_id in enc.input_ids[max_length:]:
        return None, f"cutting at max_length={max_length} would cut inside an image's tokens"
    labels = enc.labels[:max_length]
    if all(t == IGNORE for t in labels):
        return None, f"no supervised token left within max_length={max_length}"
    return Encoded(ids, labels, enc.image_key, enc.sample_id, enc.more_keys), ""


def prepare(encoded: list[Encoded], max_length: int, truncate: bool, image_token_id: int
            ) -> tuple[list[Encoded], Counter]:
    kept, dropped = [], Counter()
    for enc in encoded:
        fitted, reason = fit_length(enc, max_length, truncate, image_token_id)
        if fitted is None:
            dropped[reason] += 1
        elif all(t == IGNORE for t in fitted.labels):
            dropped["no supervised (assistant) token"] += 1
        else:
            kept.append(fitted)
    return kept, dropped


def pack_rows(lengths: list[int], order: list[int], max_length: int, buffer: int = 2048) -> list[list[int]]:
    """First-fit-decreasing bin packing over a shuffled order, in buffers (keeps batches mixed)."""
    rows: list[list[int]] = []
    for start in range(0, len(order), buffer):
        chunk = sorted(order[start:start + buffer], key=lambda i: -lengths[i])
        bins: list[list[int]] = []
        room: list[int] = []
        for i in chunk:
            for b, free in enumerate(room):
                if lengths[i] <= free:
                    bins[b].append(i)
                    room[b] -= lengths[i]
                    break
            else:
                bins.append([i])
                room.append(max_length - lengths[i])
        rows += bins
    return rows


def epoch_rows(lengths: list[int], epoch: int, seed: int, max_length: int, packing: bool,
               group_by_length: bool, rows_per_step: int) -> list[list[int]]:
    rng = random.Random(f"{seed}:epoch{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if packing:
        rows = pack_rows(lengths, order, max_length)
        rng.shuffle(rows)
        return rows
    rows = [[i] for i in order]
    if group_by_length:  # like HF's LengthGroupedSampler: sort inside mega-batches, then shuffle batches
        mega = rows_per_step * 16
        grouped = []
        for start in range(0, len(rows), mega):
            grouped += sorted(rows[start:start + mega], key=lambda r: -lengths[r[0]])
        batches = [grouped[i:i + rows_per_step] for i in range(0, len(grouped), rows_per_step)]
        rng.shuffle(batches)
        rows = [r for b in batches for r in b]
    return rows


@dataclass
class StepPlan:
    """One optimizer step: ``micro[rank][m]`` is the list of rows (each a list of sample indices)."""

    micro: list[list[list[list[int]]]]
    n_label_tokens: int  # supervised tokens in the whole global batch (loss normaliser)
    epoch: int


def plan_steps(encoded: list[Encoded], *, seed: int, max_length: int, packing: bool, group_by_length: bool,
               per_device_batch_size: int, grad_accum: int, world_size: int, epochs: float,
               max_steps: int) -> list[StepPlan]:
    """The whole stage's data order, deterministic from the seed: every rank computes the same plan,
    so resuming or changing the process count changes nothing but who computes what."""
    lengths = [len(e) for e in encoded]
    n_labels = [sum(t != IGNORE for t in e.labels) for e in encoded]
    rows_per_step = per_device_batch_size * grad_accum * world_size
    steps: list[StepPlan] = []
    epoch = 0
    per_epoch = None
    while True:
        rows = epoch_rows(lengths, epoch, seed, max_length, packing, group_by_length, rows_per_step)
        n_full = len(rows) // rows_per_step
        if n_full == 0:
            raise ValueError(f"only {len(rows)} rows of data for a global batch of {rows_per_step} rows; "
                             f"lower per_device_batch_size/grad_accum or add data")
        per_epoch = per_epoch or n_full
        target = max_steps if max_steps > 0 else max(1, round(epochs * per_epoch))
        for s in range(n_full):
            if len(steps) >= target:
                return steps
            chunk = rows[s * rows_per_step:(s + 1) * rows_per_step]
            micro = [[chunk[(m * world_size + r) * per_device_batch_size:
                            (m * world_size + r + 1) * per_device_batch_size] for m in range(grad_accum)]
                     for r in range(world_size)]
            steps.append(StepPlan(micro, sum(n_labels[i] for row in chunk for i in row), epoch))
        if len(steps) >= target:
            return steps
        epoch += 1


def split_image_tensors(enc: dict, n_images: int) -> list[dict]:
    """The image tensors the processor returned for a conversation, one dict per image, as it returns them for
    a single image (LLaVA: pixel_values (1, 3, H, W); Qwen2.5-VL: patches (n, d) + image_grid_thw (1, 3)), so a
    batch concatenates them in token order."""
    tensors = {k: v for k, v in enc.items() if k not in ("input_ids", "assistant_mask")}
    if n_images == 1:
        return [tensors]
    if "image_grid_thw" in tensors:  # patches of all images in one tensor: split by each grid's patch count
        grids = tensors["image_grid_thw"]
        patches = tensors["pixel_values"].split(grids.prod(-1).tolist())
        return [{"pixel_values": p, "image_grid_thw": grids[k:k + 1]} for k, p in enumerate(patches)]
    return [{name: v[k:k + 1] for name, v in tensors.items()} for k in range(n_images)]


def collate(rows: list[list[int]], encoded: list[Encoded], pixels: dict, pad_id: int):
    """Rows of packed samples -> model inputs. Right padding; pads get labels -100 and continue the
    last sample's positions (causal attention means no real token ever sees them)."""
    import torch

    width = max(sum(len(encoded[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    images = []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            enc = encoded[i]
            n = len(enc)
            input_ids[r, at:at + n] = torch.tensor(enc.input_ids)
            labels[r, at:at + n] = torch.tensor(enc.labels)
            position_ids[r, at:at + n] = torch.arange(n)
            images.extend(pixels[key] for key in enc.image_keys())  # in token order: LLaVA fills them in turn
            at += n
        last = position_ids[r, at - 1].item()
        position_ids[r, at:] = torch.arange(last + 1, last + 1 + width - at)
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    for key in images[0] if images else ():
        batch[key] = torch.cat(pad_tiles([image[key] for image in images]))
    return batch


def pad_tiles(tensors: list) -> list:
    """Per-image tile stacks (LLaVA-NeXT / OneVision: (1, tiles, C, H, W)) padded with zeros to the most tiles,
    as their processors pad a batch; the model keeps each image's own tiles (from image_sizes)."""
    import torch

    if len({t.shape[1:] for t in tensors}) <= 1 or any(t.dim() != 5 for t in tensors):
        return tensors
    most = max(t.shape[1] for t in tensors)
    return [torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 0, 0, most - t.shape[1])) for t in tensors]
