"""Multi-image samples (a volume as N slices, LLaVA's multi-image convention: one ``<image>`` per image in
the first human turn, ``"image"`` a list of paths): read, encoded with N x 64 image tokens, collated with
the pixels in token order, and a packed row with a multi-image sample gives the same logits as alone."""

from __future__ import annotations

import json

import pytest
import torch

from gmai.model import create_model
from gmai.train.config import DataArgs
from gmai.train.data import DataError, corpus_texts, load_samples
from gmai.train.fixtures import write_synthetic_corpus
from gmai.train.packing import Encoder, collate


def _add_volume_rows(corpus, n_images: int = 3) -> list[str]:
    images = sorted(str(p.relative_to(corpus)) for p in (corpus / "images").glob("*.png"))[:n_images]
    tokens = "<image>\n" * n_images
    row = {"id": "3d#vol#ct#synthetic-volume#1", "image": images, "split": "train", "source": "synthetic-volume",
           "conversations": [{"from": "human", "value": f"{tokens}These {n_images} images are slices of one CT scan, "
                                                         "in order. On which slice is the tumor largest?"},
                             {"from": "gpt", "value": "Slice 2."}]}
    with open(corpus / "MM-Instruct.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return images


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_images=8, heldout_fraction=0.0)
    images = _add_volume_rows(corpus)
    samples, _ = load_samples(corpus, DataArgs())
    model, processor = create_model("tiny", corpus=corpus_texts(samples))
    model.eval()
    return corpus, images, samples, model, processor


def test_a_multi_image_row_is_read_with_every_image(setup):
    corpus, images, samples, _, _ = setup
    volume = next(s for s in samples if s.id.startswith("3d#vol#"))
    assert volume.all_images() == tuple((corpus / p).resolve() for p in images)
    assert volume.image == (corpus / images[0]).resolve()
    assert "<image>" not in volume.messages[0]["content"]


def test_placeholders_must_match_the_images(setup, tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "c", n_images=4, heldout_fraction=0.0)
    images = sorted(str(p.relative_to(corpus)) for p in (corpus / "images").glob("*.png"))[:3]
    row = {"id": "x", "image": images, "conversations": [{"from": "human", "value": "<image>\nWhich slice?"},
                                                         {"from": "gpt", "value": "2"}]}
    (corpus / "MM-Percept.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="1 '<image>' placeholders for 3 images"):
        load_samples(corpus, DataArgs())


def test_encoded_with_one_block_of_image_tokens_per_image_and_collated_in_order(setup):
    _, images, samples, model, processor = setup
    encoder = Encoder(processor)
    volume = next(s for s in samples if s.id.startswith("3d#vol#"))
    single = next(s for s in samples if s.image is not None and not s.images)
    enc_v, enc_s = encoder.encode(volume), encoder.encode(single)
    assert enc_v.input_ids.count(encoder.image_token_id) == 3 * 64
    assert len(enc_v.image_keys()) == 3 and len(set(enc_v.image_keys())) == 3
    batch = collate([[0, 1]], [enc_s, enc_v], encoder.pixels, processor.tokenizer.pad_token_id)
    assert batch["pixel_values"].shape[0] == 4
    for k, key in enumerate(enc_v.image_keys()):  # the volume's slices follow the single image, in order
        assert torch.equal(batch["pixel_values"][1 + k], encoder.pixels[key]["pixel_values"][0])
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
        alone_batch = collate([[0]], [enc_v], encoder.pixels, processor.tokenizer.pad_token_id)
        alone = model(**{k: v for k, v in alone_batch.items() if k != "labels"}, use_cache=False).logits[0]
        # swapping two slices changes the result: the images are not interchangeable
        swapped = dict(alone_batch)
        swapped["pixel_values"] = alone_batch["pixel_values"][[1, 0, 2]]
        other = model(**{k: v for k, v in swapped.items() if k != "labels"}, use_cache=False).logits[0]
    assert torch.allclose(packed[len(enc_s):], alone, atol=1e-4)
    assert not torch.allclose(other, alone, atol=1e-4)


def test_a_training_stage_runs_on_multi_image_samples_only(tmp_path):
    from safetensors.torch import load_file

    from gmai.train.config import config_from_dict
    from gmai.train.trainer import train

    corpus = write_synthetic_corpus(tmp_path / "corpus", n_images=8, image_size=64, heldout_fraction=0.0, n_text=4)
    for _ in range(4):
        _add_volume_rows(corpus)
    stage = {"per_device_batch_size": 2, "max_length": 256, "packing": True, "log_every": 1, "max_steps": 2,
             "trainable": ["projector", "vision", "llm"], "lr": 1e-3, "mixture": {"volume": 1.0}}
    tree = {"model": {"preset": "tiny", "tokenizer_vocab_size": 600},
            "data": {"groups": [{"group": "volume", "source": ["synthetic-volume"]}], "default_group": "other"},
            "run": {"seed": 0, "tensorboard": False, "plot": False, "torch_threads": 1}, "stages": {1: stage}}
    out = tmp_path / "out"
    train(config_from_dict(tree), corpus, out, stages=[1])
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("event") == "step"]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(m["loss"])) for m in steps)
    data = next(m for m in metrics if m["event"] == "stage_start")["data"]
    assert data["mixture"]["volume"]["used"] == 4 and data["samples"] == 4 and not data["length_dropped"]
    assert load_file(str(out / "stage1" / "model.safetensors"))
