"""Batched generation on a local checkpoint with plain transformers classes."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from gmai.infer.types import ChatRequest, Completion, GenerationConfig, PromptTooLongError, truncate_at_stop


class LocalBackend:
    def __init__(self, model, processor, name: str = "local"):
        import torch

        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # decoder-only generation pads on the left
        self.device = next(model.parameters()).device
        self._torch = torch

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None, trust_remote_code: bool = False):
        import torch

        from gmai.model.factory import load_checkpoint

        model, processor = load_checkpoint(path, trust_remote_code=trust_remote_code)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device != "cpu":
            model = model.to(device=device, dtype=torch.bfloat16)
        return cls(model.to(device), processor, name=Path(path).name)

    def _encode(self, requests: list[ChatRequest], to_device: bool = True):
        from gmai.model.chat import adds_special_tokens, render_prompt  # the model's own template

        texts = [render_prompt(self.processor, r.to_messages()) for r in requests]
        images = self.prepare_images([im for r in requests for im in r.images])
        counts = [len(r.images) for r in requests]
        if images and all(counts):  # one list per prompt (Gemma 3's processor counts images per prompt)
            images = [images[sum(counts[:i]):sum(counts[:i + 1])] for i in range(len(counts))]
        kwargs = {"images": images} if images else {}
        enc = self.processor(text=texts, return_tensors="pt", padding=True,
                             add_special_tokens=adds_special_tokens(self.tokenizer, texts[0]), **kwargs)
        return {k: v.to(self.device) for k, v in enc.items()} if to_device else dict(enc)

    def prepare_images(self, images: list) -> list:
        """The per-image work that does not need the model (RGB, pad to square, resize: :func:`presize_images`).
        Idempotent, so a caller may run it ahead, off the model's thread (``gmai.eval.runner`` does it for the
        next batch while this one generates): :meth:`_encode` then finds the images at size and has nothing
        left to do but normalise them."""
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return presize_images(getattr(self.processor, "image_processor", None), rgb)

    def prepare(self, request: ChatRequest, config: GenerationConfig):
        """One request rendered, tokenized, image-processed and checked against the context window
        (raises PromptTooLongError), for ``complete(..., prepared=...)``. A server runs this off the
        model's thread, so a bad or long request fails alone, before it joins a batch."""
        enc = self._encode([request], to_device=False)
        self._check_fits(enc, config)
        return enc

    def _collate(self, encodings: list[dict]) -> dict:
        """Prepared single-request encodings -> one batch, left-padded as the processor pads."""
        width = max(e["input_ids"].shape[1] for e in encodings)
        batch = {}
        for key in dict.fromkeys(k for e in encodings for k in e):  # some requests carry no images
            parts = [e[key] for e in encodings if key in e]
            if key in ("input_ids", "attention_mask") or (parts[0].dim() == 2 and len(parts) == len(encodings) and all(
                    p.shape[1] == e["input_ids"].shape[1] for p, e in zip(parts, encodings))):
                fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
                parts = [self._torch.nn.functional.pad(p, (width - p.shape[1], 0), value=fill) for p in parts]
            batch[key] = self._torch.cat(parts)  # per-image tensors (pixel_values): concatenated in order
        return {k: v.to(self.device) for k, v in batch.items()}

    def _generate_kwargs(self, config: GenerationConfig) -> dict:
        sample = config.temperature > 0
        kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=sample,
                      num_return_sequences=config.num_return_sequences,
                      pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p)
        return kwargs

    @property
    def context_length(self) -> int | None:
        """The language model's context window, when its config states one."""
        config = getattr(self.model.config, "text_config", self.model.config)
        return getattr(config, "max_position_embeddings", None)

    def _check_fits(self, enc, config: GenerationConfig) -> None:
        limit, prompt = self.context_length, enc["input_ids"].shape[1]
        if limit and prompt + config.max_new_tokens > limit:
            raise PromptTooLongError(f"prompt of {prompt} tokens + max_new_tokens {config.max_new_tokens} "
                                     f"exceeds the model's context of {limit} tokens")

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}

    def _row_stopper(self, should_stop: list[Callable[[], bool]], n: int):
        """Stops each request's rows at the next token once its ``should_stop()`` is true."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        torch = self._torch

        class _Rows(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                flags = [bool(stop()) for stop in should_stop for _ in range(n)]
                return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([_Rows()])

    def _complete_batch(self, requests: list[ChatRequest], config: GenerationConfig, prepared=None,
                        should_stop=None) -> list[Completion]:
        enc = self._collate(prepared) if prepared else self._encode(requests)
        self._check_fits(enc, config)
        n = config.num_return_sequences
        extra = {"stopping_criteria": self._row_stopper(should_stop, n)} if should_stop else {}
        with self._torch.inference_mode():
            out = self.model.generate(**enc, **self._generate_kwargs(config), **extra)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        prompt_lengths = enc["attention_mask"].sum(dim=1).repeat_interleave(config.num_return_sequences).tolist()
        eos, pad = self._eos_ids(), self.tokenizer.pad_token_id
        completions = []
        for text, row, prompt_tokens in zip(texts, new_tokens.tolist(), prompt_lengths):
            ended = next((i for i, tok in enumerate(row) if tok in eos), None)
            used = ended + 1 if ended is not None else sum(tok != pad for tok in row)
            cut = truncate_at_stop(text, config.stop)
            finish = "stop" if ended is not None or len(cut) < len(text) or used < config.max_new_tokens else "length"
            completions.append(Completion(cut.strip(), finish, int(prompt_tokens), int(used)))
        return completions

    def complete(self, requests: list[ChatRequest], config: GenerationConfig | None = None,
                 batch_size: int = 16, prepared: list | None = None,
                 should_stop: list[Callable[[], bool]] | None = None) -> list[list[Completion]]:
        """Like :meth:`generate`, with finish reasons and token counts: ``num_return_sequences``
        completions per request (the server's path). ``prepared``: :meth:`prepare`'s output per
        request; ``should_stop``: one callable per request, whose rows stop at the next token
        once it returns true (an abandoned request)."""
        config = config or GenerationConfig()
        if config.seed is not None:
            self._torch.manual_seed(config.seed)
        flat: list[Completion] = []
        for start in range(0, len(requests), max(1, batch_size)):
            chunk = slice(start, start + batch_size)
            flat.extend(self._complete_batch(requests[chunk], config, prepared[chunk] if prepared else None,
                                             should_stop[chunk] if should_stop else None))
        n = config.num_return_sequences
        return [flat[i:i + n] for i in range(0, len(flat), n)]

    def stream(self, request: ChatRequest, config: GenerationConfig | None = None,
               should_stop: Callable[[], bool] | None = None, prepared=None) -> Generator[str, None, Completion]:
        """Yield the reply to one request as text pieces while it is generated.

        Stop strings are honoured across piece boundaries (text that could be the start of a stop
        string is held back until it is known not to be one). Generation ends early when the
        consumer stops iterating or ``should_stop()`` becomes true, so an abandoned stream does
        not keep the model busy. The generator's return value (``StopIteration.value``) is a
        :class:`Completion` with an empty ``text`` carrying the finish reason and token counts.
        ``prepared``: :meth:`prepare`'s output for ``request`` (then nothing is tokenized here).
        """
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        config = config or GenerationConfig()
        if config.num_return_sequences != 1:
            raise ValueError("stream() generates one sequence; use complete() for num_return_sequences > 1")
        if config.seed is not None:
            self._torch.manual_seed(config.seed)
        enc = self._collate([prepared]) if prepared is not None else self._encode([request])
        self._check_fits(enc, config)
        halt = threading.Event()
        prompt_tokens, eos = enc["input_ids"].shape[1], self._eos_ids()
        progress = {"tokens": 0, "eos": False}

        class _Halt(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                progress["tokens"] = input_ids.shape[1] - prompt_tokens
                progress["eos"] = int(input_ids[0, -1]) in eos
                return halt.is_set() or bool(should_stop and should_stop())

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._torch.inference_mode():
                    self.model.generate(**enc, **self._generate_kwargs(config), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Halt()]))
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer below
                errors.append(err)
                streamer.on_finalized_text("", stream_end=True)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            stopped_by_string = yield from _stop_aware(streamer, config.stop, halt)
        finally:
            halt.set()
            worker.join()
        if errors:
            raise errors[0]
        reached_limit = progress["tokens"] >= config.max_new_tokens and not progress["eos"]
        finish = "length" if reached_limit and not stopped_by_string else "stop"
        return Completion("", finish, int(enc["attention_mask"].sum()), progress["tokens"])

    def generate(self, requests: list[ChatRequest], config: GenerationConfig | None = None,
                 batch_size: int = 16) -> list[str] | list[list[str]]:
        config = config or GenerationConfig()
        groups = [[c.text for c in group] for group in self.complete(requests, config, batch_size)]
        return [g[0] for g in groups] if config.num_return_sequences == 1 else groups


def _presizable(image_processor) -> int:
    """The output side when ``image_processor`` is LLaVA's pad-to-square + resize to a square + (no-op) crop,
    the gmai presets' processor; 0 for any other processor (left to do its own work)."""
    from transformers import LlavaImageProcessorPil

    ip = image_processor
    if not isinstance(ip, LlavaImageProcessorPil) or not (ip.do_pad and ip.do_resize):
        return 0
    side, crop = ip.size.shortest_edge, ip.crop_size
    if not side or ip.size.longest_edge or (ip.do_center_crop and (crop.height, crop.width) != (side, side)):
        return 0
    return side if isinstance(ip.resample, int) else 0


def _pad_and_resize(image, side: int, background: tuple[int, ...], resample: int):
    from PIL import Image

    width, height = image.size
    if width != height:
        longest = max(width, height)
        canvas = Image.new("RGB", (longest, longest), background)
        canvas.paste(image, ((longest - width) // 2, (longest - height) // 2))
        image = canvas
    return image.resize((side, side), resample=resample)


def presize_images(image_processor, images: list) -> list:
    """Pad to a square and resize in PIL, several images at once, BEFORE the image processor sees them:
    bit-identical to what ``LlavaImageProcessorPil`` does (pad with the mean colour, then resize; tested in
    tests/infer/test_infer_presize.py), which it then finds already square and at size (its steps become
    no-ops). The processor itself pads in NumPy, channels-first, copying a full-size square
    (a 2321 px VQA-RAD radiograph: ~16 MB) back and forth between NumPy and PIL per image; PIL's paste and
    resize release the GIL, so a small thread pool also spreads the images over the cores.
    Other processors get the images unchanged."""
    side = _presizable(image_processor) if images else 0
    if not side or all(im.size == (side, side) for im in images):
        return images
    from concurrent.futures import ThreadPoolExecutor

    background = tuple(int(x * 255) for x in image_processor.image_mean)
    work = lambda im: _pad_and_resize(im, side, background, image_processor.resample)  # noqa: E731
    if len(images) == 1:
        return [work(images[0])]
    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
        return list(pool.map(work, images))


def _stop_aware(pieces: Iterator[str], stop: list[str], halt: threading.Event) -> Generator[str, None, bool]:
    """Pass text pieces through, ending at the first stop string (which is not emitted).
    Returns whether a stop string ended the text."""
    stop = [x for x in stop if x]
    hold = max((len(x) for x in stop), default=1) - 1
    buffer, started, stopped = "", False, False
    for piece in pieces:
        buffer += piece
        cut = truncate_at_stop(buffer, stop)
        if len(cut) < len(buffer):
            halt.set()
            buffer, stopped = cut, True
            break
        emit, buffer = buffer[:len(buffer) - hold], buffer[len(buffer) - hold:]
        if not started:
            emit = emit.lstrip()  # match complete(), which strips the reply
            started = bool(emit)
        if emit:
            yield emit
    if not started:
        buffer = buffer.lstrip()
    if buffer.rstrip():
        yield buffer.rstrip()
    return stopped
