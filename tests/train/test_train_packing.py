import pytest
import torch

from gmai.model import create_model, load_checkpoint, save_checkpoint
from gmai.train.config import DataArgs
from gmai.train.data import corpus_texts, load_samples
from gmai.train.fixtures import write_synthetic_corpus
from gmai.train.packing import IGNORE, Encoded, Encoder, collate, fit_length, plan_steps, prepare
from gmai.train.trainer import token_loss_sum


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    corpus = write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_images=12, heldout_fraction=0.0)
    samples, _ = load_samples(corpus, DataArgs())
    model, processor = create_model("tiny", corpus=corpus_texts(samples))
    model.eval()
    return samples, model, processor


def test_labels_keep_only_assistant_replies(setup):
    samples, _, processor = setup
    encoder = Encoder(processor)
    sample = next(s for s in samples if s.subset == "MM-Instruct")  # two assistant turns
    enc = encoder.encode(sample)
    supervised = processor.tokenizer.decode([t for t in enc.labels if t != IGNORE])
    assert supervised == "".join(t + "<|im_end|>" for t in sample.assistant_texts())
    n_image = enc.input_ids.count(encoder.image_token_id)
    assert n_image == 64  # tiny: (128/16)^2 visual tokens, all unsupervised
    assert all(lab == IGNORE for tok, lab in zip(enc.input_ids, enc.labels) if tok == encoder.image_token_id)


def test_training_renders_the_same_prompt_as_inference_with_the_saved_template(setup, tmp_path):
    """The chat template saved with the checkpoint, used at inference, gives the training prompt prefix."""
    samples, model, processor = setup
    save_checkpoint(model, processor, tmp_path / "ckpt")
    _, loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.chat_template == processor.chat_template
    for sample in [s for s in samples if s.image is not None][:2] + [s for s in samples if s.image is None][:1]:
        train_enc = Encoder(processor).encode(sample)
        from PIL import Image

        image = Image.open(sample.image) if sample.image else None
        prompt = Encoder(loaded).chat_messages(sample, image)[:1]  # the first user turn, as a client sends it
        inf = loaded.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        prefix = inf["input_ids"]
        prefix = list(prefix[0]) if not isinstance(prefix[0], int) else list(prefix)
        assert train_enc.input_ids[:len(prefix)] == prefix
        # and the first supervised token is exactly where generation starts
        first_label = next(i for i, t in enumerate(train_enc.labels) if t != IGNORE)
        assert first_label == len(prefix)


def test_packed_forward_equals_separate_forwards(setup):
    samples, model, processor = setup
    encoder = Encoder(processor)
    picks = [s for s in samples if s.image is not None][:2] + [s for s in samples if s.image is None][:1]
    encoded = [encoder.encode(s) for s in picks]
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        packed = collate([[0, 1, 2]], encoded, encoder.pixels, pad)
        packed_loss = token_loss_sum(model, dict(packed))
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}, use_cache=False).logits[0]
        at, separate_loss = 0, 0.0
        for i in range(3):
            single = collate([[i]], encoded, encoder.pixels, pad)
            separate_loss += token_loss_sum(model, dict(single)).item()
            alone = model(**{k: v for k, v in single.items() if k != "labels"}, use_cache=False).logits[0]
            n = len(encoded[i])
            assert torch.allclose(logits[at:at + n], alone, atol=1e-4), f"sample {i} differs when packed"
            at += n
    assert packed_loss.item() == pytest.approx(separate_loss, rel=1e-5)


def test_overlong_samples_are_dropped_or_cut_after_the_image_with_reasons():
    image_id = 7
    enc = Encoded(input_ids=[1] + [image_id] * 4 + [5] * 6, labels=[IGNORE] * 5 + [5] * 6, image_key="x",
                  sample_id="s")
    assert fit_length(enc, 20, False, image_id)[0] is enc
    assert fit_length(enc, 8, False, image_id) == (None, "longer than max_length=8")
    cut, _ = fit_length(enc, 8, True, image_id)
    assert cut.input_ids == [1] + [image_id] * 4 + [5] * 3
    assert fit_length(enc, 3, True, image_id)[1].startswith("cutting at max_length=3 would cut inside an image")
    kept, dropped = prepare([enc, enc], 8, False, image_id)
    assert kept == [] and dropped == {"longer than max_length=8": 2}


def _encs(lengths):
    return [Encoded([1] * n, [IGNORE] + [1] * (n - 1), None, str(i)) for i, n in enumerate(lengths)]


def test_packing_plan_fills_rows_and_splits_global_batches_across_ranks():
    encoded = _encs([30, 50, 20, 90, 10, 60, 40, 70, 25, 35, 45, 55] * 3)
    plan = plan_steps(encoded, seed=0, max_length=100, packing=True, group_by_length=False, per_device_batch_size=1,
                      grad_accum=2, world_size=2, epochs=1, max_steps=0)
    for step in plan:
        rows = [row for rank in step.micro for micro in rank for row in micro]
        assert len(rows) == 4
        assert all(sum(len(encoded[i]) for i in row) <= 100 for row in rows)
    used = [i for step in plan for rank in step.micro for micro in rank for row in micro for i in row]
    assert len(used) == len(set(used))  # each sample at most once per epoch
    # the same global batches, whatever the process count
    one = plan_steps(encoded, seed=0, max_length=100, packing=True, group_by_length=False, per_device_batch_size=2,
                     grad_accum=2, world_size=1, epochs=1, max_steps=0)
    assert [s.n_label_tokens for s in one] == [s.n_label_tokens for s in plan]
    assert plan_steps(encoded, seed=0, max_length=100, packing=True, group_by_length=False, per_device_batch_size=1,
                      grad_accum=2, world_size=2, epochs=1, max_steps=0)[0].micro == plan[0].micro


def test_group_by_length_reduces_padding():
    import random

    rng = random.Random(0)
    encoded = _encs([rng.randint(5, 200) for _ in range(256)])

    def padding(group):
        plan = plan_steps(encoded, seed=0, max_length=256, packing=False, group_by_length=group,
                          per_device_batch_size=8, grad_accum=1, world_size=1, epochs=1, max_steps=0)
        total = 0
        for step in plan:
            rows = step.micro[0][0]
            width = max(len(encoded[r[0]]) for r in rows)
            total += sum(width - len(encoded[r[0]]) for r in rows)
        return total

    assert padding(True) < 0.3 * padding(False)
