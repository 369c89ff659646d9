"""Batched generation on a local checkpoint with plain transformers classes."""

from __future__ import annotations

from pathlib import Path

from gmai.infer.types import ChatRequest, GenerationConfig, truncate_at_stop


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

    def _encode(self, requests: list[ChatRequest]):
        texts = [self.processor.apply_chat_template(r.to_messages(), add_generation_prompt=True, tokenize=False)
                 for r in requests]
        images = [im.convert("RGB") for r in requests for im in r.images]
        kwargs = {"images": images} if images else {}
        enc = self.processor(text=texts, return_tensors="pt", padding=True, **kwargs)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _generate_batch(self, requests: list[ChatRequest], config: GenerationConfig) -> list[str]:
        enc = self._encode(requests)
        sample = config.temperature > 0
        kwargs = dict(max_new_tokens=config.max_new_tokens, do_sample=sample,
                      num_return_sequences=config.num_return_sequences,
                      pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=config.temperature, top_p=config.top_p)
        with self._torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [truncate_at_stop(t, config.stop).strip() for t in texts]

    def generate(self, requests: list[ChatRequest], config: GenerationConfig | None = None,
                 batch_size: int = 16) -> list[str] | list[list[str]]:
        config = config or GenerationConfig()
        if config.seed is not None:
            self._torch.manual_seed(config.seed)
        flat: list[str] = []
        for start in range(0, len(requests), max(1, batch_size)):
            flat.extend(self._generate_batch(requests[start:start + batch_size], config))
        n = config.num_return_sequences
        return flat if n == 1 else [flat[i:i + n] for i in range(0, len(flat), n)]
