"""image_url parts -> PIL images: limits are checked before decoding; unsafe sources refused."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_fakes import huge_png

from gmai.serve.errors import APIError
from gmai.serve.images import ImageLimits, load_image_url


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_png_data_url_becomes_rgb():
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    out = load_image_url(data_url(png_bytes(image)), ImageLimits(), "p")
    assert out.mode == "RGB" and out.size == (8, 8)
    assert np.array_equal(np.asarray(out)[..., 0], np.asarray(image))


def test_sixteen_bit_png_is_rescaled_not_clipped():
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    out = load_image_url(data_url(png_bytes(Image.fromarray(values))), ImageLimits(), "p")
    pixels = np.asarray(out)[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) > 32


def _refusal(url: str, limits: ImageLimits = ImageLimits()) -> APIError:
    with pytest.raises(APIError) as info:
        load_image_url(url, limits, "messages[0].content[0].image_url")
    assert info.value.param == "messages[0].content[0].image_url"
    return info.value


def test_bad_base64_is_a_400():
    err = _refusal("data:image/png;base64,@@@not-base64@@@")
    assert (err.status, err.code) == (400, "invalid_base64")


def test_not_an_image_is_a_400():
    assert _refusal(data_url(b"hello, not a picture")).code == "invalid_image"


def test_over_limit_image_rejected_from_header_before_decoding():
    image = png_bytes(Image.new("L", (300, 200)))
    err = _refusal(data_url(image), ImageLimits(max_image_pixels=50_000))
    assert (err.status, err.code) == (400, "image_too_large") and "300x200" in err.message


def test_decompression_bomb_rejected_from_header_before_decoding():
    bomb = huge_png(20_000, 20_000)
    assert len(bomb) < 200_000  # small on the wire; 400 M pixels decoded
    err = _refusal(data_url(bomb))
    assert (err.status, err.code) == (400, "image_too_large")
    assert "pixels" in err.message


def test_truncated_png_is_a_400():
    good = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    assert _refusal(data_url(good[: len(good) // 2])).code == "invalid_image"


def test_remote_urls_are_refused():
    assert _refusal("https://example.org/x.png").code == "remote_url_refused"


def test_local_paths_need_an_allowed_root(tmp_path):
    path = tmp_path / "a.png"
    Image.new("L", (4, 4)).save(path)
    assert _refusal(str(path)).status == 403
    out = load_image_url(f"file://{path}", ImageLimits(allowed_root=tmp_path), "p")
    assert out.size == (4, 4)
    assert load_image_url("a.png", ImageLimits(allowed_root=tmp_path), "p").size == (4, 4)  # relative to root


def test_paths_escaping_the_root_are_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(secret)
    (root / "link.png").symlink_to(secret)
    limits = ImageLimits(allowed_root=root)
    for url in (str(secret), "../secret.png", str(root / "link.png"), "/etc/passwd", "file:///etc/hostname"):
        err = _refusal(url, limits)
        assert (err.status, err.code) == (403, "path_not_allowed"), url


def _ct_small() -> bytes:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def test_dicom_data_url_is_read_through_imaging():
    out = load_image_url(data_url(_ct_small(), "application/dicom"), ImageLimits(), "p")
    assert out.mode == "RGB" and out.size == (128, 128)
    assert np.asarray(out).std() > 0


def test_dicom_pixel_limit_checked_from_header():
    err = _refusal(data_url(_ct_small(), "application/dicom"), ImageLimits(max_image_pixels=100 * 100))
    assert err.code == "image_too_large" and "128x128" in err.message


def test_dicom_upload_leaves_no_temp_file(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    load_image_url(data_url(_ct_small(), "application/dicom"), ImageLimits(), "p")
    assert list(tmp_path.iterdir()) == []


def test_garbage_dicom_is_a_400():
    fake = b"\x00" * 128 + b"DICM" + b"\x01\x02" * 50
    err = _refusal(data_url(fake, "application/dicom"))
    assert err.code == "invalid_dicom" and "no pixel data" in err.message


# ---------------------------------------------------------------------------------- pricing from headers
def test_a_png_bomb_under_the_pixel_limit_is_refused_by_its_compression_ratio():
    from gmai.serve.images import decode_cost

    bomb = huge_png(5000, 5000)  # 25 M pixels: at the pixel limit, ~25 KB on the wire
    refs = [(data_url(bomb), "messages[0].content[0].image_url")]
    with pytest.raises(APIError) as info:
        decode_cost(refs, ImageLimits())
    assert info.value.code == "image_too_large" and "decompression bomb" in info.value.message
    err = _refusal(data_url(bomb))  # the decoder refuses it the same way when called directly
    assert "decompression bomb" in err.message


def test_costly_transfer_syntaxes_are_priced_per_frame_from_the_header():
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
    from serve_fakes import dicom_bytes, j2k_frame, rle_slowest_frame

    from gmai.serve.images import COSTLY_CODEC_FACTOR, RLE_FACTOR, decode_cost

    def price(data):
        return decode_cost([(data_url(data, "application/dicom"), "p")], ImageLimits())

    frame = j2k_frame(64, 64)
    assert price(dicom_bytes(64, 64, [frame] * 3, JPEG2000Lossless, 16)) == 64 * 64 * 3 * COSTLY_CODEC_FACTOR
    rle = dicom_bytes(64, 64, [rle_slowest_frame(64, 64)], RLELossless)  # priced by its stream's length
    assert len(rle) * RLE_FACTOR <= price(rle) <= (len(rle) + 2) * RLE_FACTOR and len(rle) > 64 * 64
    assert price(dicom_bytes(64, 64, [bytes(64 * 64)], ExplicitVRLittleEndian)) == 64 * 64
    assert price(_ct_small()) == 128 * 128  # pydicom's CT_small.dcm: header parsed from its first bytes


def test_a_many_frame_jpeg2000_dicom_over_the_request_budget_is_refused_before_decoding(monkeypatch):
    from pydicom.uid import JPEG2000Lossless
    from serve_fakes import dicom_bytes, j2k_frame

    import gmai.serve.images as images

    data = dicom_bytes(512, 512, [j2k_frame(512, 512)] * 95, JPEG2000Lossless, 16)  # 25 M pixels of JPEG 2000
    monkeypatch.setattr(images, "decode_images", lambda *a: pytest.fail("decoded"))
    with pytest.raises(APIError) as info:
        images.decode_cost([(data_url(data, "application/dicom"), "p")], ImageLimits())
    assert info.value.code == "image_too_costly" and "JPEG 2000" in info.value.message


def test_an_image_whose_header_is_past_the_first_bytes_is_priced_as_the_worst_case():
    from gmai.serve.images import COSTLY_CODEC_FACTOR, HEADER_BYTES, image_price

    # A JPEG whose size marker comes after a large comment segment run: PIL cannot read it from the head.
    image = Image.fromarray(np.zeros((8, 8), np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    jpeg = buf.getvalue()
    comment = b"\xff\xfe" + (65535).to_bytes(2, "big") + b"x" * 65533
    padded = jpeg[:2] + comment * (HEADER_BYTES // 65537 + 1) + jpeg[2:]
    price = image_price(data_url(padded, "image/jpeg"), ImageLimits(), "p")
    assert not price.known and price.units == ImageLimits().max_image_pixels * COSTLY_CODEC_FACTOR
    assert load_image_url(data_url(padded, "image/jpeg"), ImageLimits(), "p").size == (8, 8)  # still decodable


def test_a_dicom_whose_codestream_is_larger_than_its_header_says_is_refused_from_the_first_bytes():
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless
    from serve_fakes import dicom_bytes, j2k_frame, rle_slowest_frame

    from gmai.serve.images import RLE_FACTOR, decode_cost

    def price(data):
        return decode_cost([(data_url(data, "application/dicom"), "p")], ImageLimits())

    # Headers that say 8x8; the pixel data codes 2048x2048 (JPEG 2000) and 1024x1024 (JPEG): a decoder
    # would decode the codestream in full before noticing.
    for frame, syntax, bits, size in ((j2k_frame(2048, 2048), JPEG2000Lossless, 16, "2048x2048"),
                                      (_jpeg(1024, 1024), JPEGBaseline8Bit, 8, "1024x1024")):
        with pytest.raises(APIError) as info:
            price(dicom_bytes(8, 8, [frame], syntax, bits))
        assert info.value.code == "invalid_dicom" and size in info.value.message
    assert price(dicom_bytes(1024, 1024, [_jpeg(1024, 1024)], JPEGBaseline8Bit)) == 1024 * 1024  # honest: priced
    # RLE: the work follows the stream's length, not the header's 8x8
    liar = dicom_bytes(8, 8, [rle_slowest_frame(1024, 1024)], RLELossless)
    assert price(liar) >= 2 * 1024 * 1024 * RLE_FACTOR


def _jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()
