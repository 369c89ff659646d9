"""An adversarial DICOM shelf: planted identifiers in every place patient data hides (synthetic).

Each planted value carries a unique marker (``MKR`` + two letters + digits) so a test can grep every
output byte, stdout and stderr for all of them at once. Places covered (issue #12):

- header attributes of Table E.1-1 at the top level and inside nested sequences (depth 3), including
  observers, performers, scheduled station codes, clinical-trial, device, procedure, specimen,
  ReasonForVisit, telecom and insurance attributes;
- attributes outside the table that hold free text (Manufacturer, a code meaning in a kept sequence);
- private tags, unknown public tags, UN elements, overlays (60xx) and curves (50xx) in several groups;
- the file meta (source AE title, implementation version name, private information) and the preamble;
- file, folder and source-root names;
- invalid values that pydicom prints when it reads them (a UID, a date and an age holding a name);
- BodyPartExamined free text;
- text rendered into the pixels of ultrasound, secondary-capture, derived CT and photograph frames,
  and a CT that declares BurnedInAnnotation=YES.

Files are written with pydicom the way modality software writes them (explicit VR little endian, a
128-byte preamble, DICM prefix, group 0002 meta).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MARKERS: list[str] = []


def marker(tag: str) -> str:
    """A unique marker string, registered so the scan knows every one."""
    value = f"MKR{tag}{len(MARKERS):03d}"
    MARKERS.append(value)
    return value


def rendered_text(text: str, size: int = 256, value: int = 230) -> np.ndarray:
    """A dark frame with ``text`` drawn large, the way an ultrasound machine burns in a name."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (size, size), 20)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    draw.text((8, 20), text, fill=value, font=font)
    draw.text((8, 60), "DOE JOHN", fill=value, font=font)
    rng = np.random.default_rng(len(text))
    pixels = np.asarray(image).astype(np.int16)
    pixels[120:, :] += rng.integers(0, 60, size=(size - 120, size), dtype=np.int16)  # "anatomy" below
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _base(modality: str, sop_class: str, pixels: np.ndarray) -> object:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498." + str(len(MARKERS) + 1000)
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds.file_meta.ImplementationVersionName = marker("IV")[:16]
    ds.file_meta.SourceApplicationEntityTitle = marker("AE")[:16]
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    ds.file_meta.PrivateInformation = marker("PI").encode()
    ds.preamble = (marker("PR").encode() * 10)[:128].ljust(128, b"\0")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def _plant_header(ds: object) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def item(**values: object) -> Dataset:
        d = Dataset()
        for key, value in values.items():
            setattr(d, key, value)
        return d

    ds.PatientName = marker("PN") + "^JOHN"
    ds.PatientID = marker("ID")
    ds.PatientBirthDate = "19600101"
    ds.OtherPatientIDsSequence = Sequence([item(PatientID=marker("OI"), IssuerOfPatientID=marker("IS"))])
    ds.AccessionNumber = marker("AN")[:16]
    ds.InstitutionName = marker("IN")
    ds.ReferringPhysicianName = marker("RP")
    ds.StudyDescription = marker("SD")
    ds.SeriesDescription = marker("SE")
    ds.ImageComments = marker("IC")
    ds.ProtocolName = marker("PC")
    ds.ReasonForVisit = marker("RV")
    ds.PatientTelephoneNumbers = marker("TE")
    ds.PatientTelecomInformation = marker("TI")
    ds.PatientInsurancePlanCodeSequence = Sequence([item(CodeValue="1", CodingSchemeDesignator="L",
                                                         CodeMeaning=marker("IP"))])
    ds.ClinicalTrialSubjectID = marker("CT")
    ds.ClinicalTrialSponsorName = marker("CS")
    ds.ClinicalTrialProtocolID = marker("CP")
    ds.DeviceSerialNumber = marker("DS")
    ds.StationName = marker("SN")[:16]
    ds.OperatorsName = marker("OP")
    ds.Manufacturer = marker("MF")
    ds.ContrastBolusAgent = marker("CB")
    ds.BodyPartExamined = marker("BP")[:16]
    # observers / performers / scheduled station codes: whole sequences with content
    ds.PerformingPhysicianIdentificationSequence = Sequence([item(PersonIdentificationCodeSequence=Sequence(
        [item(CodeValue="1", CodingSchemeDesignator="L", CodeMeaning=marker("PP"))]))])
    ds.ScheduledStationNameCodeSequence = Sequence([item(CodeValue="1", CodingSchemeDesignator="L",
                                                         CodeMeaning=marker("SS"))])
    ds.RequestAttributesSequence = Sequence([item(RequestedProcedureID=marker("RQ")[:16],
                                                  ScheduledProcedureStepID=marker("SP")[:16])])
    ds.SpecimenDescriptionSequence = Sequence([item(SpecimenIdentifier=marker("SI"),
                                                    SpecimenUID="1.2.3.99")])
    # Table E.1-1 attributes nested three levels deep inside sequences the table does not list
    deep = item(PatientID=marker("D3"), PersonName=marker("DN"), ContentSequence=Sequence(
        [item(PersonName=marker("OB"), ValueType="PNAME")]))
    ds.AnatomicRegionSequence = Sequence([item(
        CodeValue="T-D4000", CodingSchemeDesignator="SRT", CodeMeaning=marker("CM"),
        AnatomicRegionModifierSequence=Sequence([item(CodeValue="1", CodingSchemeDesignator="L",
                                                      CodeMeaning=marker("MO"), ReferencedImageSequence=Sequence(
                                                          [deep]))]))])
    # invalid values pydicom warns about on reading (and would print with the value)
    ds.add_new(0x00200052, "UI", "1.2.840." + marker("UI"))  # FrameOfReferenceUID with letters
    ds.add_new(0x00080020, "DA", marker("DA"))  # StudyDate that is a name
    ds.add_new(0x00081150, "UI", "1.2.3." + marker("CU"))  # a (Referenced) SOP Class UID that is not standard
    ds.add_new(0x00101010, "AS", marker("AG"))  # PatientAge that is a name
    # private tags, an unknown public tag, a UN element
    ds.add_new(0x00090010, "LO", "ACME " + marker("PC"))
    ds.add_new(0x00091001, "LO", marker("PV"))
    ds.add_new(0x44440010, "LO", marker("UK"))
    ds.add_new(0x00081030, "UN", marker("UN").encode())  # StudyDescription stored as UN
    # overlays and curves in groups the old code missed
    for group in (0x6000, 0x6010, 0x601E):
        ds.add_new((group << 16) | 0x0022, "LO", marker("OV"))  # Overlay Description
        ds.add_new((group << 16) | 0x1500, "LO", marker("OL"))  # Overlay Label
    for group in (0x5000, 0x5008, 0x501E):
        ds.add_new((group << 16) | 0x2500, "LO", marker("CV"))  # Curve Label


def write_shelf(root: Path) -> dict[str, str]:
    """Write the shelf under ``root`` (a folder whose own name is a marker). Returns file -> expectation:
    ``"kept"``, ``"burned-in"`` (must be rejected for its burned-in text risk), ``"rejected"`` (not an
    image, truncated) or ``"not DICOM"`` (rejected as such)."""
    import warnings

    from pydicom import config

    saved = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # invalid values are planted on purpose
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _write_shelf(root)
    finally:
        config.settings.writing_validation_mode = saved


def _write_shelf(root: Path) -> dict[str, str]:
    from pydicom.uid import (
        CTImageStorage,
        MRImageStorage,
        SecondaryCaptureImageStorage,
        UltrasoundImageStorage,
        VLPhotographicImageStorage,
    )

    folder = root / f"{marker('FD')}^DOE^19600101"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    anatomy = rng.integers(900, 1300, size=(64, 64)).astype(np.uint16)
    expect: dict[str, str] = {}

    def save(name: str, ds: object, expectation: str) -> None:
        path = folder / f"{marker('FN')}_{name}.dcm"
        ds.save_as(str(path), enforce_file_format=False)
        expect[path.name] = expectation

    ct = _base("CT", CTImageStorage, anatomy)
    _plant_header(ct)
    ct.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ct.RescaleIntercept, ct.RescaleSlope = -1024, 1
    save("ct", ct, "kept")

    chest = _base("CT", CTImageStorage, anatomy + 5)
    _plant_header(chest)
    chest.BodyPartExamined = "CHEST"
    chest.RescaleIntercept, chest.RescaleSlope = -1024, 1
    chest.BurnedInAnnotation = "NO"
    save("ct_chest", chest, "kept")

    for name, modality, sop_class, extra in (
        ("us", "US", UltrasoundImageStorage, {}),
        ("sc", "OT", SecondaryCaptureImageStorage, {}),
        ("derived_ct", "CT", CTImageStorage, {"ImageType": ["DERIVED", "SECONDARY"], "BurnedInAnnotation": "NO"}),
        ("burned_ct", "CT", CTImageStorage, {"BurnedInAnnotation": "YES"}),
        ("photo", "XC", VLPhotographicImageStorage, {"RecognizableVisualFeatures": "YES"}),
        ("face_mr", "MR", MRImageStorage, {"RecognizableVisualFeatures": "YES", "BurnedInAnnotation": "NO"}),
    ):
        ds = _base(modality, sop_class, rendered_text(marker("BT")))
        _plant_header(ds)
        for key, value in extra.items():
            setattr(ds, key, value)
        save(name, ds, "burned-in")

    # archives name files anything, and old files have no preamble or file meta: still a US frame
    bare = _base("US", UltrasoundImageStorage, rendered_text(marker("BT")))
    _plant_header(bare)
    del bare.file_meta
    bare.preamble = None
    bare_path = folder / f"{marker('FN')}.DOE.JOHN"
    bare.save_as(str(bare_path), implicit_vr=True, little_endian=True, enforce_file_format=False)
    expect[bare_path.name] = "burned-in"
    notes = folder / f"{marker('FN')}_notes.txt"
    notes.write_text(f"Patient {marker('TX')} seen on 1960-01-01\n")
    expect[notes.name] = "not DICOM"

    sr = _base("SR", "1.2.840.10008.5.1.4.1.1.88.11", anatomy)
    _plant_header(sr)
    del sr.PixelData
    save("sr", sr, "rejected")
    truncated = folder / f"{marker('FN')}_truncated.dcm"
    ct.save_as(str(truncated), enforce_file_format=False)
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    expect[truncated.name] = "rejected"
    return expect
