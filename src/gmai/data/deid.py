"""DICOM de-identification: PS3.15 Annex E, with Table E.1-1 kept as data.

The table (``ps3.15-table-e1-1.csv`` beside this module, edition 2026c, source in its header) gives
each attribute's Basic Profile action. :func:`deidentify` applies it to the top level and to every
item of every sequence, at any depth:

- ``X`` and the combinations ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: removed (the strictest form);
- ``Z``, ``Z/D``: emptied; ``D``: a dummy value of the same VR (sequences: emptied);
- ``U``: UIDs remapped with an HMAC-SHA256 keyed by a secret (one per build or server process,
  never written out), so a series stays one series inside a build and cannot be recomputed outside it;
- ``K``: kept, only under a Retain option the caller turns on (off by default).

Beyond the table: private, unknown-to-the-dictionary and UN elements, every repeating overlay (60xx)
and curve (50xx) group, every person name, date, time and free-text element (SH, LO, ST, LT, UT, UC,
UR, AE) left anywhere, and every non-standard UID not in the table are removed or remapped too.
The preamble is zeroed and the file meta keeps only what decoding needs.

What segmentation readers (highdicom for SEG, rt-utils for RTSTRUCT) structurally need survives, each
through a check rather than as typed:

- structure names (``SegmentLabel``, ``ROIName``): through :func:`structure_name`, a controlled vocabulary
  of anatomy and lesion words; a name with any other word (a patient name, an MRN, a comment) becomes
  ``structure <number>``, never copied raw. ROIName is Z in the table: a generic name is what Z allows,
  and the readers look ROIs up by name, so every ROI needs one;
- coded concepts (items holding ``CodeValue`` + ``CodingSchemeDesignator``: segmented property category
  and type, algorithm family, derivation and purpose-of-reference codes): kept only when pydicom's
  dictionary of standard codes (DCM, SCT, ...) knows the pair, with the dictionary's ``CodeMeaning``
  (never the file's); any other code becomes ``99GMAI/UNKNOWN``;
- ``AlgorithmName`` / ``AlgorithmVersion`` (Type 1 in a SEG's algorithm identification): ``REMOVED``;
- the X/Z/U* sequences (``SourceImageSequence``, ``ReferencedImageSequence``) are kept under U*, their
  UIDs remapped with the same keyed map as everything else, because a SEG places each frame on its
  source slice through them; everything else inside is scrubbed like any other item.

What was done is recorded in ``DeidentificationMethod`` and ``DeidentificationMethodCodeSequence``.

Pixels are not touched here. :func:`burned_in_risk` names the rule by which a file may carry text in
its pixels; the DICOM reader rejects such files unless the caller opts into an OCR check.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import logging
import os
import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TABLE_FILE = Path(__file__).with_name("ps3.15-table-e1-1.csv")
EDITION = "2026c"
_STANDARD_UID_ROOT = "1.2.840.10008."

# Retain Patient Characteristics Option (PS3.15 E.3.6): the K entries applied here when the option is
# on: age, sex, size, weight (Table E.1-1's "Rtn. Pat. Chars. Opt." column lists these and more; the
# others stay removed).
RETAIN_PATIENT_CHARACTERISTICS = {0x00101010, 0x00100040, 0x00101020, 0x00101030}
# PS3.16 CID 7050 "De-identification Method" codes
_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
}
_DUMMY_TEXT = "REMOVED"
# Structure-name attributes -> the attribute that numbers the structure (for the generic name)
_STRUCTURE_NAME_TAGS = {0x00620005: 0x00620004, 0x30060026: 0x30060022}  # SegmentLabel, ROIName
# Type 1 in a SEG's Segmentation Algorithm Identification: kept present, content replaced
_PLACEHOLDER_TAGS = {0x00660036, 0x00660031}  # AlgorithmName, AlgorithmVersion
_CODE_TAGS = (0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080119, 0x00080120)
_UNKNOWN_CODE = ("UNKNOWN", "99GMAI", "unknown concept")
_DUMMIES = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "PN": "ANONYMOUS"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "SV", "UV"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
_IDENTIFYING_VRS = {"PN", "DA", "DT", "TM"}
# Free text and names of places/stations left after the table (Manufacturer, LUT explanations, code
# meanings in kept sequences, ...): nothing downstream needs them and anyone can type a name into them,
# so they go too (stricter than the Basic Profile, which keeps attributes it does not list).
_FREE_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "UR", "AE"}
# File meta elements decoding needs; the rest (source/sending AE titles, private information,
# implementation names) may identify a site and are dropped.
_META_KEEP = {"FileMetaInformationVersion", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
              "TransferSyntaxUID", "ImplementationClassUID"}


@dataclass(frozen=True)
class DeidOptions:
    """What one build (or server process) de-identifies with. ``secret`` keys the UID remap."""

    secret: bytes
    retain_patient_characteristics: bool = False

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"DeidOptions(secret=<hidden>, retain_patient_characteristics={self.retain_patient_characteristics})"


_CURRENT: list[DeidOptions] = [DeidOptions(secrets.token_bytes(32))]  # a fresh secret per process


def current_options() -> DeidOptions:
    return _CURRENT[0]


def use_options(options: DeidOptions) -> None:
    """Set this process's options (the build calls it in every worker, with the build's secret)."""
    _CURRENT[0] = options


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def load_or_create_secret(path: str | Path) -> bytes:
    """The secret kept at ``path`` (hex), created there (mode 0600) when the file does not exist."""
    path = Path(path)
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{path}: not a de-identification secret (expected hex)") from None
        if len(secret) < 16:
            raise ValueError(f"{path}: secret too short (need at least 16 bytes)")
        return secret
    secret = new_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret.hex() + "\n")
    return secret


def keyed_hash(secret: bytes, text: str, length: int = 16) -> str:
    """HMAC-SHA256 of ``text`` as hex: refs and names that nobody without the secret can recompute."""
    return hmac.new(secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:length]


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class TableEntry:
    group: str  # 4 hex digits, 'XX' for a repeating group's free byte
    element: str
    name: str
    action: str


@lru_cache(maxsize=1)
def table() -> tuple[TableEntry, ...]:
    with open(TABLE_FILE, encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return tuple(TableEntry(r["group"], r["element"], r["name"], r["action"]) for r in rows)


@lru_cache(maxsize=1)
def _exact_actions() -> dict[int, str]:
    return {int(e.group + e.element, 16): e.action for e in table() if "X" not in e.group + e.element}


@lru_cache(maxsize=1)
def _masked_actions() -> tuple[tuple[int, int, str], ...]:
    """(mask, value, action) for the repeating-group entries (50xx,xxxx), (60xx,3000), (60xx,4000)."""
    out = []
    for e in table():
        key = e.group + e.element
        if "X" in key:
            mask = int("".join("0" if c == "X" else "F" for c in key), 16)
            out.append((mask, int(key.replace("X", "0"), 16), e.action))
    return tuple(out)


def action_for(tag: int) -> str | None:
    """Table E.1-1's Basic Profile action for a tag, or None when the table does not list it."""
    action = _exact_actions().get(int(tag))
    if action is not None:
        return action
    for mask, value, masked_action in _masked_actions():
        if int(tag) & mask == value:
            return masked_action
    return None


# --------------------------------------------------------------------------------------------
# Applying it


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Nothing pydicom reads may reach stderr: invalid values are read as they are, not printed."""
    from pydicom import config

    logger = logging.getLogger("pydicom")
    saved = (config.settings.reading_validation_mode, config.settings.writing_validation_mode, logger.disabled)
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode, logger.disabled = saved


def deidentify(ds: Any, options: DeidOptions | None = None) -> Any:
    """De-identify a pydicom Dataset in place (and return it); see the module docstring."""
    options = options or current_options()
    with quiet_pydicom():
        _scrub(ds, options)
        _clean_file_meta(ds, options)
        _record_method(ds, options)
    return ds


def _always_removed(tag: Any, vr: str) -> bool:
    group = tag.group
    return (
        tag.is_private
        or vr == "UN"
        or 0x5000 <= group <= 0x50FF  # curves
        or 0x6000 <= group <= 0x60FF  # overlays
        or (0x7F00 <= group <= 0x7FFF and group != 0x7FE0)  # variable pixel data (retired)
    )


def _scrub(dataset: Any, options: DeidOptions) -> None:
    from pydicom.datadict import dictionary_has_tag, repeater_has_tag

    _check_code(dataset)
    for tag in list(dataset.keys()):
        try:
            elem = dataset[tag]
        except Exception:  # an element that cannot even be parsed cannot be checked: it goes  # noqa: BLE001
            del dataset[tag]
            continue
        known = dictionary_has_tag(tag) or repeater_has_tag(tag)
        if _always_removed(elem.tag, elem.VR) or not (known or elem.tag.element == 0):
            del dataset[tag]
            continue
        if int(tag) in _STRUCTURE_NAME_TAGS:
            number = dataset.get(_STRUCTURE_NAME_TAGS[int(tag)])
            elem.value = structure_name(elem.value) or f"structure {_number_text(number)}"
            continue
        if int(tag) in _PLACEHOLDER_TAGS:
            elem.value = _DUMMY_TEXT
            continue
        if int(tag) in _CODE_TAGS and "CodeValue" in dataset:  # already checked by _check_code
            continue
        action = action_for(tag)
        if action == "X/Z/U*" and elem.VR == "SQ":  # U*: kept, UIDs inside remapped (see the module docstring)
            for item in elem.value:
                _scrub(item, options)
        elif action is not None:
            _apply(dataset, elem, action, options)
        elif elem.VR in _IDENTIFYING_VRS or elem.VR in _FREE_TEXT_VRS:
            del dataset[tag]
        elif elem.VR == "UI":
            _remap_uids(elem, options, only_instances=True)
        elif elem.VR == "SQ":
            for item in elem.value:
                _scrub(item, options)


def _number_text(element: Any) -> str:
    value = getattr(element, "value", None)
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"


def _check_code(item: Any) -> None:
    """A coded-concept item keeps its code only when the standard's dictionary knows it, with the
    dictionary's meaning; any other code (anyone can type a name into a local one) becomes 99GMAI/UNKNOWN."""
    if "CodeValue" not in item and "CodingSchemeDesignator" not in item:
        return
    key = (str(item.get("CodingSchemeDesignator", "")).strip(), str(item.get("CodeValue", "")).strip())
    meaning = _known_codes().get(key)
    for tag in _CODE_TAGS:
        if tag in item:
            del item[tag]
    value, scheme, meaning = (key[1], key[0], meaning) if meaning else _UNKNOWN_CODE
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning


@lru_cache(maxsize=1)
def _known_codes() -> dict[tuple[str, str], str]:
    """(scheme, code value) -> meaning, for every code pydicom's dictionaries list (DCM, SCT, UCUM, ...)."""
    from pydicom.sr._concepts_dict import concepts

    known: dict[tuple[str, str], str] = {}
    for scheme, keywords in concepts.items():
        for codes in keywords.values():
            for value, (meaning, _) in codes.items():
                known.setdefault((scheme, value), meaning)  # the first keyword's meaning (the context groups' one)
    return known


def _apply(dataset: Any, elem: Any, action: str, options: DeidOptions) -> None:
    if options.retain_patient_characteristics and int(elem.tag) in RETAIN_PATIENT_CHARACTERISTICS:
        return  # K
    if action == "U":
        _remap_uids(elem, options, only_instances=False)
    elif action.startswith("X"):
        del dataset[elem.tag]
    elif action.startswith("Z"):
        elem.value = [] if elem.VR == "SQ" else None
    elif action == "D":
        _dummy(dataset, elem, options)
    else:  # an action this code does not know: remove rather than keep
        del dataset[elem.tag]


def _dummy(dataset: Any, elem: Any, options: DeidOptions) -> None:
    vr = elem.VR
    if vr == "SQ":
        elem.value = []
    elif vr == "UI":
        _remap_uids(elem, options, only_instances=False)
    elif vr in _NUMERIC_VRS:
        elem.value = 0
    elif vr in _BINARY_VRS:
        elem.value = b""
    elif vr in _DUMMIES:
        elem.value = _DUMMIES[vr]
    elif vr in ("AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC", "UR"):
        elem.value = _DUMMY_TEXT
    else:
        del dataset[elem.tag]


def _is_instance_uid(uid: str) -> bool:
    return not uid.startswith(_STANDARD_UID_ROOT)


def _remap_uids(elem: Any, options: DeidOptions, *, only_instances: bool) -> None:
    """U: every UID value through the keyed map; ``only_instances`` spares the UIDs the standard defines
    (SOP classes, transfer syntaxes, coding schemes: root 1.2.840.10008.), which name kinds, not people.
    A vendor's private class UID is remapped like any other: its digits can be anything."""
    if not elem.value:
        return
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    mapped = [v if only_instances and not _is_instance_uid(str(v)) else remap_uid(str(v), options) for v in values]
    elem.value = mapped if elem.VM > 1 else mapped[0]


def remap_uid(uid: str, options: DeidOptions | None = None) -> str:
    """2.25.<128-bit int> (PS3.5 B.2) from an HMAC of the UID: consistent within a build, opaque outside."""
    options = options or current_options()
    digest = hmac.new(options.secret, uid.strip().encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _clean_file_meta(ds: Any, options: DeidOptions) -> None:
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    if hasattr(ds, "preamble") and ds.preamble is not None:
        ds.preamble = b"\0" * 128
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag in list(meta.keys()):
        elem = meta[tag]
        if elem.keyword not in _META_KEEP:
            del meta[tag]
    if "MediaStorageSOPClassUID" in meta and _is_instance_uid(str(meta.MediaStorageSOPClassUID)):
        meta.MediaStorageSOPClassUID = remap_uid(str(meta.MediaStorageSOPClassUID), options)
    if "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = str(ds.get("SOPInstanceUID") or remap_uid(
            str(meta.MediaStorageSOPInstanceUID), options))
    if "ImplementationClassUID" in meta:
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID


def _record_method(ds: Any, options: DeidOptions) -> None:
    from pydicom.dataset import Dataset

    used = ["basic"] + (["patient_characteristics"] if options.retain_patient_characteristics else [])
    items = []
    for key in used:
        code, meaning = _CODES[key]
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        items.append(item)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"gmai: PS3.15 {EDITION} Table E.1-1 basic profile"  # LO: <= 64 characters
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = "REMOVED"


# --------------------------------------------------------------------------------------------
# Burned-in text: which files may carry it


# Original, primary images of these modalities pass (as in the peers' filters); anything else may carry
# text in its pixels (ultrasound calipers and names, secondary captures, photographs, documents, ...).
PASS_MODALITIES = {"CT", "MR", "CR", "DX", "MG", "PT", "NM"}
_SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"


def burned_in_risk(ds: Any) -> str | None:
    """The rule by which this file may carry burned-in text, or None. Names rules, never header values."""
    if _upper(ds.get("BurnedInAnnotation")) not in ("", "NO"):
        return "BurnedInAnnotation is not NO"
    if _upper(ds.get("RecognizableVisualFeatures")) not in ("", "NO"):
        return "RecognizableVisualFeatures is not NO"
    modality = _upper(ds.get("Modality"))
    if modality not in PASS_MODALITIES:
        return "modality is not one of CT, MR, CR, DX, MG, PT, NM (may carry burned-in text)"
    if str(ds.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE_ROOT):
        return "secondary capture (may carry burned-in text)"
    image_type = ds.get("ImageType")
    values = [str(v).strip().upper() for v in (image_type if _is_multi(image_type) else [image_type or ""])]
    if "DERIVED" in values or "SECONDARY" in values:
        return "ImageType DERIVED or SECONDARY (may carry burned-in text)"
    return None


def _upper(value: Any) -> str:
    return str(value or "").strip().upper()


def _is_multi(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes))


# --------------------------------------------------------------------------------------------
# Structure names (SEG SegmentLabel, RTSTRUCT ROIName): a controlled vocabulary


# Words a structure name may be made of, picked by hand: common anatomy words (of the kind TotalSegmentator
# classes, AAPM TG-263 organ-at-risk names and the BodyPartExamined terms use; not their full lists), lesion
# words, RT target volumes and qualifiers. A name is kept (normalised: lower case, words split on spaces, _
# and -) only when every word is in this set, a vertebra label (c1-c7, t1-t12, l1-l5, s1-s5) or a number
# from 1 to 24 (ribs, indices): no longer number, so no MRN or date, passes.
STRUCTURE_WORDS = frozenset("""
abdomen adrenal airway anus aorta aortic appendix arch arm artery atrial atrium auricle autochthon
bladder bone bowel brachiocephalic brain brainstem breast bronchus canal carotid cartilage cauda cava
caudate cavity cerebellum cerebral cervix chest chiasm clavicle coccyx cochlea colon common cord coronary
costal cricoid cyst diaphragm disc duct duodenum ear esophagus eye extremity face femoral femur fibula
gallbladder gland glottis gluteus hand head heart hepatic hip hippocampus humerus iliac iliopsoas
ileum inferior intestine jejunum joint kidney kidneys knee larynx lens lip lips liver lobe lung lungs lymph
mammary mandible thymus tongue teeth
maximus medius minimus muscle myocardium nasal neck nerve node nodule optic oral orbit ovary pancreas
parotid pelvis penis pericardium pharynx pituitary portal prostate psoas pulmonary radius rectum rib
ribs sacrum scapula seminal septum sigmoid skin skull small spinal spine spleen splenic sternum stomach
submandibular superior testis thyroid tibia trachea trunk ulna ureter urethra uterus vagina valve vein
ventricle vertebra vertebrae vesicle vessel whole body
left right lt rt l r upper lower middle anterior posterior medial lateral main proximal distal total
of and the
tumor tumour lesion mass metastasis metastases cancer carcinoma neoplasm edema oedema necrosis enhancing
necrotic non core infarct hemorrhage haemorrhage calcification fluid effusion pneumothorax consolidation
fracture stone abscess polyp ground glass opacity nodules
gtv ctv ptv itv oar target boost external body couch
""".split())
_NUMBERED_WORD = re.compile(r"(?:c[1-7]|t(?:[1-9]|1[0-2])|l[1-5]|s[1-5]|[1-9]|1[0-9]|2[0-4])")


def structure_name(value: Any) -> str | None:
    """A SEG segment label or RTSTRUCT ROI name in the controlled vocabulary (normalised), or None when any
    word of it is outside the vocabulary: the caller then names the structure generically."""
    text = str(value or "").strip().lower()
    words = [w for w in re.split(r"[\s_\-]+", text) if w]
    if not words or len(words) > 6 or not all(w in STRUCTURE_WORDS or _NUMBERED_WORD.fullmatch(w) for w in words):
        return None
    return " ".join(words)
