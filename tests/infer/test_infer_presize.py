"""LocalBackend's presizing (pad to square + resize in PIL, before the image processor) gives exactly the
processor's own pixels, so batched evaluation's replies do not change. The processor is the gmai presets'
own (``gmai.model.factory.build_image_processor``: transformers' ``LlavaImageProcessorPil``, do_pad=True)."""

import numpy as np
from PIL import Image

from gmai.demo import DEFAULT_VQA_RAD
from gmai.infer import ChatRequest, GenerationConfig
from gmai.infer.local import LocalBackend, presize_images
from gmai.model import create_model
from gmai.model.factory import build_image_processor
from gmai.model.presets import get_preset

VQA_RAD_IMAGES = sorted((DEFAULT_VQA_RAD / "images").glob("*"))


def _images():
    rng = np.random.default_rng(0)
    shapes = [(64, 80), (80, 64), (128, 128), (30, 91), (1384, 2321), (1201, 987), (5, 3), (129, 128)]
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in shapes]
    images.append(Image.fromarray(rng.integers(0, 255, (77, 50), dtype=np.uint8)).convert("RGB"))  # grey source
    return images + [Image.open(p).convert("RGB") for p in VQA_RAD_IMAGES[:4]]  # real radiographs when present


def test_presized_images_give_the_processors_own_pixels():
    processor = build_image_processor(get_preset("tiny"))
    images = _images()
    presized = presize_images(processor, images)
    assert all(im.size == (128, 128) for im in presized)
    ours = processor(presized, return_tensors="np")["pixel_values"]
    stock = processor(images, return_tensors="np")["pixel_values"]
    assert ours.shape == stock.shape and np.array_equal(ours, stock)


def test_other_processors_get_the_images_unchanged():
    processor = build_image_processor(get_preset("tiny"))
    processor.do_pad = False  # e.g. a stock CLIP-style resize + centre crop: not ours to reproduce
    images = _images()[:3]
    assert presize_images(processor, images) is images
    assert presize_images(None, images) is images


def test_batched_replies_are_the_same_with_and_without_presizing(monkeypatch):
    corpus = ["Is there a lesion? Yes.", "What modality is this? CT, MR, X-ray."] * 30
    model, processor = create_model("tiny", corpus=corpus, seed=3)
    backend = LocalBackend(model, processor)
    requests = [ChatRequest(f"Is there a lesion number {i}?", [im]) for i, im in enumerate(_images())]
    config = GenerationConfig(max_new_tokens=6)
    presized = backend.generate(requests, config, batch_size=8)
    monkeypatch.setattr("gmai.infer.local.presize_images", lambda ip, images: images)
    assert backend.generate(requests, config, batch_size=8) == presized
    encoded = backend._encode(requests[:3])["pixel_values"]
    monkeypatch.undo()
    assert np.array_equal(backend._encode(requests[:3])["pixel_values"].numpy(), encoded.numpy())


def test_evaluation_replies_are_the_same_when_images_are_prepared_ahead(tmp_path, monkeypatch):
    """``gmai.eval.runner.generate_predictions`` pads and resizes the next batch's images in its background
    thread (``LocalBackend.prepare_images``). Greedy replies equal those of the path before that change (the
    backend presizing inside its own batch encoding), of the stock processor (no presizing at all) and of one
    question at a time. Full-size images: the real VQA-RAD radiographs when present, else synthetic ones of
    VQA-RAD's sizes (2321 x 1384 and others)."""
    import threading

    from gmai.eval.benchmarks import BenchItem, ImageRef
    from gmai.eval.runner import build_prompt, generate_predictions

    paths = []
    for i, image in enumerate(_images()):
        paths.append(tmp_path / f"image_{i}.png")
        image.save(paths[-1])
    items = [BenchItem(f"q{i}", f"Is there a lesion number {i}?", "yes", "closed",
                       images=[ImageRef(path=str(p), name=p.name)]) for i, p in enumerate(paths)]
    corpus = ["Is there a lesion? Yes.", "What modality is this? CT, MR, X-ray."] * 30
    model, processor = create_model("tiny", corpus=corpus, seed=3)
    backend = LocalBackend(model, processor)
    config = GenerationConfig(max_new_tokens=16, temperature=0.0)

    threads = []
    prepare = backend.prepare_images
    monkeypatch.setattr(backend, "prepare_images",
                        lambda images: threads.append(threading.current_thread()) or prepare(images))
    ahead = [e["prediction"] for e in generate_predictions(backend, items, config, batch_size=4).values()]
    # every item's images were prepared off the model's thread (the batch encoding then finds them at size)
    assert sum(t is not threading.main_thread() for t in threads) == len(items)

    class InsideTheBatch:  # the backend as it was: images padded and resized inside its batch encoding
        generate = staticmethod(backend.generate)

    before = [e["prediction"] for e in generate_predictions(InsideTheBatch(), items, config, batch_size=4).values()]
    one_by_one = [backend.generate([ChatRequest(build_prompt(it), it.load_images())], config, batch_size=1)[0]
                  for it in items]
    monkeypatch.setattr("gmai.infer.local.presize_images", lambda ip, images: images)
    stock = [e["prediction"] for e in generate_predictions(InsideTheBatch(), items, config, batch_size=4).values()]
    assert ahead == before == stock == one_by_one
    assert len(set(ahead)) > 1  # the replies depend on the image, so a changed pixel could show
