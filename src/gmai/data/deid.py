"""DICOM de-identification: PS3.15 Annex E, with Table E.1-1 kept as data.

The table (``ps3.15-table-e1-1.csv`` beside this module, edition 2026d, source in its header) gives
each attribute's Basic Profile action and its action under each Option. :func:`deidentify` applies it
to the top level and to every item of every sequence, at any depth:

- ``X`` and the combinations ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``: removed (the strictest form);
- ``Z``, ``Z/D``: emptied; ``D``: a dummy value of the same VR (sequences: emptied);
- ``U``: UIDs remapped with an HMAC-SHA256 keyed by a secret (one per build or server process,
  never written out), so a series stays one series inside a build and cannot be recomputed outside it;
- ``K`` / ``C``: only under an Option the caller turns on (:data:`OPTIONS`, every one off by default),
  from that Option's column of the table: ``K`` keeps the value (a sequence kept has its items scrubbed
  like any item; a "UID" that is not a valid UID is still remapped); ``C`` cleans it: a sequence is kept
  with its items scrubbed, a date (DA, DT) is shifted by a whole number of days keyed by the secret (one
  shift per build: intervals survive, dates do not; times of day are kept), a text value is kept only when
  every word of it is in :data:`DESCRIPTOR_WORDS` (anything else gets the Basic Profile action). When two
  Options on list one attribute, ``K`` wins over ``C``. Under Clean Graphics, overlay (60xx) and curve (50xx)
  groups stay removed: their bitmaps cannot be checked for text here. Under Retain Safe Private, a private
  attribute is kept only when Table E.3.10-1 (``ps3.15-table-e3-10-1.csv``) lists its group, private creator
  and element, and only in a checked form: numbers as they are, a code string of code characters, text
  through :data:`DESCRIPTOR_WORDS`, UIDs remapped, sequences with their items scrubbed; binary values and
  anything else are removed, as is every private attribute the table does not list.

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
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

TABLE_FILE = Path(__file__).with_name("ps3.15-table-e1-1.csv")
SAFE_PRIVATE_FILE = Path(__file__).with_name("ps3.15-table-e3-10-1.csv")
EDITION = "2026d"
_STANDARD_UID_ROOT = "1.2.840.10008."

# PS3.16 CID 7050 "De-identification Method" code of the Basic Profile
_BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
# The PS3.15 Annex E Options offered: DeidOptions field -> (Table E.1-1 column, CID 7050 code, meaning)
OPTIONS: dict[str, tuple[str, str, str]] = {
    "retain_safe_private": ("rtn_safe_priv", "113111", "Retain Safe Private Option"),
    "retain_uids": ("rtn_uids", "113110", "Retain UIDs Option"),
    "retain_device_identity": ("rtn_dev_id", "113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("rtn_inst_id", "113112", "Retain Institution Identity Option"),
    "retain_patient_characteristics": ("rtn_pat_chars", "113108", "Retain Patient Characteristics Option"),
    "retain_full_dates": ("rtn_long_full_dates", "113106",
                          "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_modified_dates": ("rtn_long_modif_dates", "113107",
                              "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean_descriptors": ("clean_desc", "113105", "Clean Descriptors Option"),
    "clean_structured_content": ("clean_struct_cont", "113104", "Clean Structured Content Option"),
    "clean_graphics": ("clean_graph", "113103", "Clean Graphics Option"),
}
_VALID_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
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
    """What one build (or server process) de-identifies with. ``secret`` keys the UID remap and the date
    shift; every Option (:data:`OPTIONS`) is off unless turned on here."""

    secret: bytes
    retain_patient_characteristics: bool = False
    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_full_dates: bool = False
    retain_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False

    def __post_init__(self) -> None:
        if self.retain_full_dates and self.retain_modified_dates:
            raise ValueError("retain_full_dates and retain_modified_dates exclude each other (PS3.15 E.3.6)")

    @classmethod
    def with_options(cls, secret: bytes, names: Any = ()) -> DeidOptions:
        """From Option names (``retain_uids`` or ``retain-uids``); an unknown name is an error listing the known."""
        fields = {}
        for name in names:
            key = str(name).strip().replace("-", "_")
            if key not in OPTIONS:
                raise ValueError(f"unknown de-identification option {name!r}; known: "
                                 f"{', '.join(n.replace('_', '-') for n in OPTIONS)}")
            fields[key] = True
        return cls(secret, **fields)

    def enabled(self) -> tuple[str, ...]:
        """The Options turned on, in :data:`OPTIONS` order."""
        return tuple(name for name in OPTIONS if getattr(self, name))

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The Table E.1-1 columns of the Options turned on (looked up once: every element asks)."""
        return tuple(OPTIONS[name][0] for name in self.enabled())

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"DeidOptions(secret=<hidden>, options={list(self.enabled())})"


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
    group: str  # 4 hex digits, 'XX' for a repeating group's free byte; 'gggg' for the private row
    element: str
    name: str
    action: str  # the Basic Profile's
    options: tuple[tuple[str, str], ...] = ()  # (Option column, K or C), only the columns that list it

    @property
    def is_private_row(self) -> bool:
        """The row "(gggg,eeee) where gggg is odd": every private attribute (removed by :func:`_always_removed`)."""
        return self.group.lower() == "gggg"

    def option(self, column: str) -> str:
        return dict(self.options).get(column, "")


@lru_cache(maxsize=1)
def table() -> tuple[TableEntry, ...]:
    columns = [column for column, _, _ in OPTIONS.values()]  # every Option column
    with open(TABLE_FILE, encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return tuple(TableEntry(r["group"], r["element"], r["name"], r["action"],
                                tuple((c, r[c]) for c in columns if r[c])) for r in rows)


@lru_cache(maxsize=1)
def _exact_entries() -> dict[int, TableEntry]:
    return {int(e.group + e.element, 16): e for e in table()
            if "X" not in e.group + e.element and not e.is_private_row}


@lru_cache(maxsize=1)
def _masked_entries() -> tuple[tuple[int, int, TableEntry], ...]:
    """(mask, value, entry) for the repeating-group entries (50xx,xxxx), (60xx,3000), (60xx,4000)."""
    out = []
    for e in table():
        key = e.group + e.element
        if "X" in key:
            mask = int("".join("0" if c == "X" else "F" for c in key), 16)
            out.append((mask, int(key.replace("X", "0"), 16), e))
    return tuple(out)


def entry_for(tag: int) -> TableEntry | None:
    """Table E.1-1's row for a tag, or None when the table does not list it."""
    entry = _exact_entries().get(int(tag))
    if entry is not None:
        return entry
    for mask, value, masked in _masked_entries():
        if int(tag) & mask == value:
            return masked
    return None


def action_for(tag: int) -> str | None:
    """Table E.1-1's Basic Profile action for a tag, or None when the table does not list it."""
    entry = entry_for(tag)
    return entry.action if entry else None


def action_under(entry: TableEntry, options: DeidOptions) -> str:
    """The action for ``entry`` with ``options``: an Option's K wins over an Option's C, and either over the
    Basic Profile; an Option whose column leaves the row empty changes nothing."""
    if not options.columns or not entry.options:
        return entry.action
    found = {entry.option(column) for column in options.columns}
    return "K" if "K" in found else "C" if "C" in found else entry.action


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
        if elem.tag.is_private and options.retain_safe_private:
            if not _keep_safe_private(dataset, elem, options):
                del dataset[tag]
            continue
        # known: pydicom can name it, or Table E.1-1 lists it (the table is newer than pydicom's dictionary)
        entry = entry_for(tag)
        known = dictionary_has_tag(tag) or repeater_has_tag(tag) or entry is not None
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
        action = action_under(entry, options) if entry is not None else None
        if action == "K":
            _keep(elem, options)
        elif action == "C":
            _clean(dataset, elem, entry, options)
        elif action == "X/Z/U*" and elem.VR == "SQ":  # U*: kept, UIDs inside remapped (see the module docstring)
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


def _keep(elem: Any, options: DeidOptions) -> None:
    """K: the value stays; a sequence's items are still scrubbed, and a value in a UID field that is not a
    valid UID (anyone can type a name there) is remapped all the same."""
    if elem.VR == "SQ":
        for item in elem.value:
            _scrub(item, options)
    elif elem.VR == "UI" and elem.value:
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        kept = [v if _is_valid_uid(str(v)) else remap_uid(str(v), options) for v in values]
        elem.value = kept if elem.VM > 1 else kept[0]


@lru_cache(maxsize=1)
def safe_private() -> dict[tuple[int, str, int], str]:
    """Table E.3.10-1: (group, private creator, element's low byte) -> VR."""
    with open(SAFE_PRIVATE_FILE, encoding="utf-8") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return {(int(r["group"], 16), r["private_creator"], int(r["element"][2:], 16)): r["vr"] for r in rows}


_NUMBER_VRS = _NUMERIC_VRS | {"FD", "FL", "AT"}
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{0,16}")


def _keep_safe_private(dataset: Any, elem: Any, options: DeidOptions) -> bool:
    """Retain Safe Private (see the module docstring): whether ``elem`` stays, cleaned in place."""
    group, element = elem.tag.group, elem.tag.element
    if 0x0010 <= element <= 0x00FF:  # a private creator: kept when the table lists it for this group
        return any(g == group and c == str(elem.value).strip() for g, c, _ in safe_private())
    creator = dataset.get((group << 16) | (element >> 8))
    vr = safe_private().get((group, str(getattr(creator, "value", "")).strip(), element & 0xFF))
    if vr is None or elem.VR not in vr.split("/"):
        return False  # not listed, or not the VR the table gives (an implicit-VR file reads it as UN)
    if elem.VR in _NUMBER_VRS:
        return True
    if elem.VR == "CS":
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        return all(_CODE_STRING.fullmatch(str(v)) for v in values)
    if elem.VR in _FREE_TEXT_VRS:
        words = descriptor(elem.value)
        if words is not None:
            elem.value = words
        return words is not None
    if elem.VR == "UI":
        _remap_uids(elem, options, only_instances=True)
        return True
    if elem.VR == "SQ":
        for item in elem.value:
            _scrub(item, options)
        return True
    return False


def _is_valid_uid(uid: str) -> bool:
    return len(uid) <= 64 and _VALID_UID.fullmatch(uid) is not None


def _clean(dataset: Any, elem: Any, entry: TableEntry, options: DeidOptions) -> None:
    """C (see the module docstring): what cannot be cleaned here gets the Basic Profile action."""
    vr = elem.VR
    if vr == "SQ":
        for item in elem.value:
            _scrub(item, options)
        return
    if vr == "TM":
        return  # dates move by whole days, so the time of day keeps its meaning
    elif vr in ("DA", "DT") and _shift_dates(elem, options):
        return
    elif vr in _FREE_TEXT_VRS or vr == "CS":
        words = descriptor(elem.value)
        if words is not None:
            elem.value = words
            return
    _apply(dataset, elem, entry.action, options)


def date_shift_days(options: DeidOptions) -> int:
    """The build's date shift for Retain Modified Dates: 365 to 3,650 days back, keyed by the secret."""
    digest = hmac.new(options.secret, b"date shift", hashlib.sha256).digest()
    return 365 + int.from_bytes(digest[:4], "big") % 3286


def _shift_dates(elem: Any, options: DeidOptions) -> bool:
    """Shift every DA / DT value back by :func:`date_shift_days`; False when a value is not a date."""
    import datetime as dt

    values = list(elem.value) if elem.VM > 1 else [elem.value]
    shifted = []
    for value in values:
        text = str(value).strip()
        try:
            day = dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return False
        if not text[:8].isdigit():
            return False
        shifted.append((day - dt.timedelta(days=date_shift_days(options))).strftime("%Y%m%d") + text[8:])
    elem.value = shifted if elem.VM > 1 else shifted[0]
    return True


def _apply(dataset: Any, elem: Any, action: str, options: DeidOptions) -> None:
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

    codes = [_BASIC_CODE] + [OPTIONS[name][1:] for name in options.enabled()]
    items = []
    for code, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        items.append(item)
    # LO, one value per profile/option (each <= 64 characters)
    method = [f"gmai: PS3.15 {EDITION} Table E.1-1 basic profile"] + [OPTIONS[n][2] for n in options.enabled()]
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method if len(method) > 1 else method[0]
    ds.DeidentificationMethodCodeSequence = items
    ds.LongitudinalTemporalInformationModified = (
        "UNMODIFIED" if options.retain_full_dates else "MODIFIED" if options.retain_modified_dates else "REMOVED")


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


# Words a cleaned descriptor (Clean Descriptors and the other Options' C on text) may be made of: the
# structure words and common acquisition words. No longer number than 24 passes, so no MRN or date.
DESCRIPTOR_WORDS = STRUCTURE_WORDS | frozenset("""
ct mr mri pet spect cr dx mg nm xa rf us pt axial ax sagittal sag coronal cor oblique t1 t2 pd flair dwi
adc swi stir gre tse fse bold dti mip mpr 3d 2d scout localizer topogram survey routine standard protocol
series study scan exam imaging image images view contrast with without w wo pre post iv arterial venous
delayed phase thin thick slice soft tissue window high resolution low dose angio angiography perfusion
diffusion weighted fat sat suppression bolus tracking screening follow up baseline ap pa lat frontal
""".split())


def descriptor(value: Any) -> str | list[str] | None:
    """A descriptor in :data:`DESCRIPTOR_WORDS` (normalised, each value of a multi-valued one), or None when
    any word of it is outside the vocabulary."""
    values = list(value) if _is_multi(value) else [value]
    cleaned = [_vocabulary_words(v, DESCRIPTOR_WORDS, 8) for v in values]
    if not values or any(c is None for c in cleaned):
        return None
    return cleaned if _is_multi(value) else cleaned[0]


def _vocabulary_words(value: Any, vocabulary: frozenset[str], most: int) -> str | None:
    text = str(value or "").strip().lower()
    words = [w for w in re.split(r"[\s_\-]+", text) if w]
    if not words or len(words) > most or not all(w in vocabulary or _NUMBERED_WORD.fullmatch(w) for w in words):
        return None
    return " ".join(words)


def structure_name(value: Any) -> str | None:
    """A SEG segment label or RTSTRUCT ROI name in the controlled vocabulary (normalised), or None when any
    word of it is outside the vocabulary: the caller then names the structure generically."""
    return _vocabulary_words(value, STRUCTURE_WORDS, 6)
