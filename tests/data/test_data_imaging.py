"""gmai.data.imaging: DICOM reading, windowing, de-identification, NIfTI, helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from gmai.data import imaging
from gmai.data.imaging import ImageReadError


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(path)


def _write(tmp_path: Path, name: str = "img.dcm", pixels=None, photometric="MONOCHROME2", **header) -> Path:
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4000 if pixels is None else pixels
    path = tmp_path / name
    imaging.write_dicom(path, pixels, {"Modality": "CT", **header}, photometric=photometric)
    return path


def test_window_presets_and_linear_window():
    assert imaging.window_preset("lung") == (-600.0, 1500.0)
    assert imaging.window_preset("soft_tissue") == (40.0, 400.0)
    with pytest.raises(ValueError, match="unknown window preset"):
        imaging.window_preset("liverish")
    out = imaging.apply_window(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]), 40, 400)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255]


def test_percentile_normalisation_clips_outliers():
    values = np.concatenate([np.linspace(0, 100, 1000), [1e6]])
    out = imaging.normalize_percentile(values)
    assert out.max() == 255 and out.min() == 0
    assert out[500] == pytest.approx(128, abs=3)  # the outlier did not squash the range


def test_pad_to_square_centres_without_cropping():
    image = np.ones((10, 4, 3), dtype=np.uint8)
    out = imaging.pad_to_square(image)
    assert out.shape == (10, 10, 3)
    assert out[:, 3:7].sum() == image.sum() and out[:, :3].sum() == 0


def test_ct_small_rescaled_and_windowed():
    img = imaging.read_dicom(_testdata("CT_small.dcm"))
    assert img.modality == "CT" and len(img.frames) == 1
    assert img.frames[0].dtype == np.uint8 and img.frames[0].shape == (128, 128)
    lung = imaging.read_dicom(_testdata("CT_small.dcm"), window="lung")
    assert not np.array_equal(lung.frames[0], img.frames[0])  # the window changes the picture
    assert "lung" in lung.windowing


def test_rescale_slope_intercept_applied(tmp_path):
    hu = np.full((32, 32), 40, dtype=np.int32)
    hu[:, 16:] = -1000
    stored = (hu + 1024).astype(np.uint16)
    path = _write(tmp_path, pixels=stored, RescaleIntercept=-1024, RescaleSlope=1)
    frame = imaging.read_dicom(path, window="soft-tissue").frames[0]
    assert frame[0, 0] == 128  # 40 HU is the centre of the soft-tissue window
    assert frame[0, 20] == 0  # air


def test_monochrome1_is_inverted(tmp_path):
    pixels = np.zeros((16, 16), dtype=np.uint16)
    pixels[:, 8:] = 1000
    mono1 = imaging.read_dicom(_write(tmp_path, "m1.dcm", pixels, "MONOCHROME1", Modality="CR")).frames[0]
    mono2 = imaging.read_dicom(_write(tmp_path, "m2.dcm", pixels, "MONOCHROME2", Modality="CR")).frames[0]
    assert mono2[0, 0] < mono2[0, 15]
    assert mono1[0, 0] > mono1[0, 15]  # low stored values are white in MONOCHROME1
    assert np.array_equal(mono1, 255 - mono2)


def test_multiframe_gives_frames():
    img = imaging.read_dicom(_testdata("emri_small.dcm"))
    assert len(img.frames) == 10 and img.summary["frames"] == 10
    assert all(f.shape == (64, 64) for f in img.frames)


def test_truncated_and_non_dicom_are_errors(tmp_path):
    with pytest.raises(ImageReadError, match="truncated"):
        imaging.read_dicom(_testdata("MR_truncated.dcm"))
    good = _write(tmp_path)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:-3000])
    with pytest.raises(ImageReadError) as err:
        imaging.read_dicom(cut)
    assert "cut.dcm" in str(err.value)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom at all" * 10)
    with pytest.raises(ImageReadError, match="not a DICOM"):
        imaging.read_dicom(junk)


def test_burned_in_annotation_rejected_by_default(tmp_path):
    path = _write(tmp_path, BurnedInAnnotation="YES")
    with pytest.raises(ImageReadError, match="burned-in text risk: BurnedInAnnotation"):
        imaging.read_dicom(path)
    with pytest.raises(ValueError, match="burned_in="):
        imaging.read_dicom(path, burned_in="keep")


def test_deidentify_removes_identity_and_replaces_uids(tmp_path):
    path = _write(tmp_path, PatientName="DOE^JANE", PatientID="PID-12345", PatientBirthDate="19610203",
                  StudyDate="20200101", InstitutionName="Saint Nowhere", AccessionNumber="ACC999",
                  ReferringPhysicianName="WHO^DR", StudyInstanceUID="1.2.3.4.5")
    ds = pydicom.dcmread(path)
    ds.add_new(0x00091001, "LO", "private secret")
    ds.StationAETitle = "MERCYCT01"
    ds.file_meta.SourceApplicationEntityTitle = "MERCYPACS"
    ds.ReferencedInstanceSequence = [pydicom.Dataset()]  # a sequence Table E.1-1 does not list: scrubbed inside
    ds.ReferencedInstanceSequence[0].ContentDate = "20200101"
    ds.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    ds.ReferencedInstanceSequence[0].ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    sop_class = ds.SOPClassUID
    imaging.deidentify(ds)
    text = str(ds)
    text += str(ds.file_meta)
    for secret in ("DOE", "PID-12345", "19610203", "20200101", "Saint Nowhere", "ACC999", "WHO^DR", "private secret",
                   "MERCY"):
        assert secret not in text
    assert ds.StudyInstanceUID != "1.2.3.4.5" and ds.StudyInstanceUID.startswith("2.25.")
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")  # nested UIDs too
    assert ds.ReferencedInstanceSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # kinds kept
    assert ds.SOPClassUID == sop_class
    again = imaging.deidentify(pydicom.dcmread(path))  # same secret (process): a series stays one series
    assert again.StudyInstanceUID == ds.StudyInstanceUID


def test_header_only_read_is_deidentified(tmp_path):
    path = _write(tmp_path, PatientName="DOE^JANE", Rows=64)
    header = imaging.read_dicom_dataset(path, pixels=False)
    assert "PixelData" not in header and not header.PatientName and header.Rows == 64


def test_safe_header_summary_is_a_whitelist(tmp_path):
    path = _write(tmp_path, PatientName="DOE^JANE", PatientID="PID-12345", BodyPartExamined="CHEST",
                  SliceThickness=2.5, ManufacturerModelName="Model X")
    summary = imaging.safe_header_summary(pydicom.dcmread(path))
    assert summary["modality"] == "CT" and summary["body_part"] == "chest"  # through the vocabulary
    assert summary["slice_thickness_mm"] == 2.5 and "model" not in summary  # free text is never copied
    assert "DOE" not in repr(summary) and "PID" not in repr(summary)


def test_nifti_load_and_slice_orientation(tmp_path):
    import nibabel as nib

    data = np.zeros((8, 6, 4), dtype=np.int16)
    data[7, 5, 2] = 100  # patient right (high x), anterior (high y) in RAS+
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    volume = imaging.load_nifti(tmp_path / "v.nii.gz")
    assert volume.shape == (8, 6, 4) and imaging.nifti_shape(tmp_path / "v.nii.gz") == (8, 6, 4)
    axial = imaging.volume_slice(volume, 2, 2)
    assert axial.shape == (6, 8)
    assert axial[0, 0] == 100  # anterior at the top, patient's right on the image's left
    # a LAS-oriented file is reoriented to RAS+ first
    flipped = np.diag([-1.0, 1, 1, 1])
    nib.save(nib.Nifti1Image(data[::-1].copy(), flipped), tmp_path / "las.nii.gz")
    assert np.array_equal(imaging.load_nifti(tmp_path / "las.nii.gz"), volume)


def test_nifti_truncated_is_an_error(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), dtype=np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    raw = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="cut.nii.gz"):
        imaging.load_nifti(tmp_path / "cut.nii.gz")


def test_nibabel_anatomical_mr_reads():
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        pytest.skip("nibabel test data not installed")
    volume = imaging.load_nifti(path)
    display, how = imaging.volume_to_uint8(volume, window=None, modality="MR")
    assert display.dtype == np.uint8 and "percentile" in how and display.max() == 255


def test_read_image_truncated_png(tmp_path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    raw = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(raw[: len(raw) // 2])
    assert imaging.read_image(tmp_path / "a.png").shape == (64, 64)
    with pytest.raises(ImageReadError, match="b.png"):
        imaging.read_image(tmp_path / "b.png")
