"""SYNTHETIC phantom datasets in the standard layouts, plus real images shipped by pip packages.

Everything this module draws is synthetic (numpy phantoms, not patients) and every such dataset
is named ``synthetic-*``. The phantoms are made so that a tiny model can learn something real
from them: lesion present/absent, lesion class by shape and texture (round smooth cyst,
spiculated heterogeneous mass, clustered bright calcifications), location (left/right/upper/lower),
object count (1-4), and modality (CT-like, MR-like, X-ray-like, microscopy-like contrasts).

:func:`default_real_sources` arranges the real images that ship inside pip packages (pydicom and
pydicom-data test DICOMs, nibabel's anatomical MR, scikit-image's fundus/pathology/microscopy
pictures) into layout folders. DICOMs are copied as files and read through the ``dicom`` adapter,
so they are de-identified like any other DICOM.

``gmai data synth OUT`` writes both and lists the source specs in ``OUT/sources.txt``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from gmai.data.imaging import save_png, write_dicom

LESION_CLASSES = ("normal", "cyst", "spiculated mass", "calcification")
CELL_CLASSES = ("round cell", "lobed cell", "pale disc")


@dataclass(frozen=True)
class SynthDataset:
    name: str
    spec: str  # KIND:PATH?options, ready for `gmai data build`
    inputs: str  # what was written, with its unit: "288 PNG", "5 volumes x 24 slices", ...
    what: str


# --------------------------------------------------------------------------------------------
# Drawing primitives (pure numpy, deterministic given the generator)
# --------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy, xx


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = _grid(size)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, size: int, scale: int = 8) -> np.ndarray:
    """Low-frequency texture: coarse noise upsampled by repetition then box-blurred."""
    coarse = rng.normal(0.0, 1.0, (size // scale + 2, size // scale + 2))
    fine = np.kron(coarse, np.ones((scale, scale)))[:size, :size]
    kernel = np.ones(scale) / scale
    fine = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 0, fine)
    return np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, fine)


def _spiculated(size: int, cy: float, cx: float, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A star-like mass: the radius varies with angle, with several sharp spikes."""
    yy, xx = _grid(size)
    angle = np.arctan2(yy - cy, xx - cx)
    dist = np.hypot(yy - cy, xx - cx)
    spikes = rng.integers(5, 9)
    phase = rng.uniform(0, 2 * np.pi)
    edge = radius * (0.75 + 0.55 * np.clip(np.cos(spikes * angle + phase), 0, None) ** 4)
    return dist <= edge


def _body_ct(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like axial phantom in HU: air, fat ring, soft tissue, a spine. Returns (hu, body mask)."""
    hu = np.full((size, size), -1000.0)
    c = size / 2
    body = _ellipse(
        size,
        c + rng.uniform(-2, 2),
        c + rng.uniform(-2, 2),
        size * rng.uniform(0.36, 0.42),
        size * rng.uniform(0.42, 0.47),
    )
    inner = _ellipse(size, c, c, size * 0.32, size * 0.38)
    hu[body] = -100.0  # subcutaneous fat
    hu[body & inner] = 40.0  # soft tissue
    hu += np.where(body, 12.0 * _smooth_noise(rng, size, 6), 0.0)
    spine = _ellipse(size, c + size * 0.24, c, size * 0.06, size * 0.06)
    hu[spine] = 700.0
    hu += rng.normal(0.0, 8.0, hu.shape)  # quantum noise
    return hu, body & inner


def _window_u8(hu: np.ndarray, center: float = 40.0, width: float = 400.0) -> np.ndarray:
    from gmai.data.imaging import apply_window

    return apply_window(hu, center, width)


def _random_point_in(mask: np.ndarray, rng: np.random.Generator, margin: int) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    keep = (ys >= margin) & (ys < mask.shape[0] - margin) & (xs >= margin) & (xs < mask.shape[1] - margin)
    ys, xs = ys[keep], xs[keep]
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


# --------------------------------------------------------------------------------------------
# 1. Classification (ImageFolder): lesion present/absent and lesion class, CT-like
# --------------------------------------------------------------------------------------------


def lesion_image(rng: np.random.Generator, label: str, size: int = 128) -> np.ndarray:
    """One CT-like phantom slice (uint8, soft-tissue window) with the lesion class ``label``."""
    hu, inside = _body_ct(rng, size)
    if label != "normal":
        cy, cx = _random_point_in(inside, rng, margin=size // 6)
        if label == "cyst":  # round, sharp, homogeneous, water-like
            r = rng.uniform(size * 0.06, size * 0.11)
            lesion = _ellipse(size, cy, cx, r, r * rng.uniform(0.9, 1.1))
            hu[lesion] = 5.0 + rng.normal(0, 3, lesion.sum())
        elif label == "spiculated mass":  # star-shaped, enhancing, heterogeneous
            lesion = _spiculated(size, cy, cx, rng.uniform(size * 0.07, size * 0.11), rng)
            hu[lesion] = 110.0 + 35.0 * _smooth_noise(rng, size, 3)[lesion]
        elif label == "calcification":  # a cluster of tiny very dense dots
            for _ in range(int(rng.integers(3, 7))):
                dy, dx = rng.normal(0, size * 0.03, 2)
                dot = _ellipse(size, cy + dy, cx + dx, rng.uniform(1.0, 2.2), rng.uniform(1.0, 2.2))
                hu[dot] = 900.0
        else:
            raise ValueError(f"unknown lesion class {label!r}")
    return _window_u8(hu)


def write_classification(out: Path, rng: np.random.Generator, per_class: int, size: int = 128) -> SynthDataset:
    root = out / "synthetic-lesion-cls"
    count = 0
    for split, n in (("train", per_class), ("test", max(2, per_class // 5))):
        for label in LESION_CLASSES:
            for i in range(n):
                save_png(lesion_image(rng, label, size), root / split / label / f"{i:04d}.png")
                count += 1
    spec = f"imagefolder:{root}?name=synthetic-lesion-cls&modality=CT&organ=abdomen"
    return SynthDataset(
        "synthetic-lesion-cls",
        spec,
        f"{count} PNG",
        "CT-like abdominal phantoms: normal / cyst / spiculated mass / calcification",
    )


# --------------------------------------------------------------------------------------------
# 2. 2-D segmentation (PNG pairs): MR-like head, 0-2 lesions at varying locations
# --------------------------------------------------------------------------------------------

_QUADRANT_CENTRES = {
    "left": (0.5, 0.3),
    "right": (0.5, 0.7),
    "upper": (0.3, 0.5),
    "lower": (0.7, 0.5),
    "left upper": (0.3, 0.3),
    "right upper": (0.3, 0.7),
    "left lower": (0.7, 0.3),
    "right lower": (0.7, 0.7),
}


def seg_image(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like (T2-ish) head phantom and its mask (1 = lesion, 0 = background)."""
    c = size / 2
    head = _ellipse(size, c, c, size * 0.44, size * 0.36)
    brain = _ellipse(size, c, c, size * 0.40, size * 0.32)
    img = np.zeros((size, size))
    img[head] = 180.0  # scalp/fat bright
    img[brain] = 95.0 + 10.0 * _smooth_noise(rng, size, 5)[brain]
    ventricles = _ellipse(size, c, c - size * 0.05, size * 0.09, size * 0.03) | _ellipse(
        size, c, c + size * 0.05, size * 0.09, size * 0.03
    )
    img[ventricles] = 200.0  # CSF bright on T2
    mask = np.zeros((size, size), dtype=np.uint8)
    places = rng.choice(list(_QUADRANT_CENTRES), size=int(rng.integers(1, 3)), replace=False)
    for place in places:
        fy, fx = _QUADRANT_CENTRES[str(place)]
        cy, cx = fy * size + rng.normal(0, size * 0.03), fx * size + rng.normal(0, size * 0.03)
        r = rng.uniform(size * 0.05, size * 0.09)
        lesion = _ellipse(size, cy, cx, r, r * rng.uniform(0.7, 1.3)) & brain
        img[lesion] = 165.0 + rng.normal(0, 6, lesion.sum())  # hyperintense lesion
        mask[lesion] = 1
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_seg2d(out: Path, rng: np.random.Generator, n: int, size: int = 128) -> SynthDataset:
    root = out / "synthetic-lesion-seg2d"
    for i in range(n):
        image, mask = seg_image(rng, size)
        save_png(image, root / "images" / f"case_{i:04d}.png")
        save_png(mask, root / "masks" / f"case_{i:04d}.png")
    (root / "labels.json").write_text(json.dumps({"0": "background", "1": "lesion"}, indent=1))
    spec = f"seg2d:{root}?name=synthetic-lesion-seg2d&modality=MR&organ=brain"
    return SynthDataset(
        "synthetic-lesion-seg2d",
        spec,
        f"{n} PNG pairs",
        "MR-like head phantoms with 1-2 lesion masks at varied locations",
    )


# --------------------------------------------------------------------------------------------
# 3. 3-D segmentation (NIfTI): CT-like abdomen volume in HU with liver and tumour labels
# --------------------------------------------------------------------------------------------


def ct_volume(rng: np.random.Generator, size: int = 96, depth: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume int16, label volume uint8) in RAS+ voxel order (x: towards patient right).

    The liver sits on the patient's right (high x), so the radiological display shows it on the
    image's left; tumours are hypodense (about 15 HU against 95 HU liver, 40 HU other soft tissue), which only a
    soft-tissue window makes visible (a percentile stretch spends its range on air and bone).
    """
    zz, yy, xx = np.mgrid[0:depth, 0:size, 0:size].astype(np.float64)
    hu = np.full((depth, size, size), -1000.0)
    labels = np.zeros((depth, size, size), dtype=np.uint8)
    c = size / 2
    body = ((yy - c) / (size * 0.40)) ** 2 + ((xx - c) / (size * 0.46)) ** 2 <= 1
    inner = ((yy - c) / (size * 0.34)) ** 2 + ((xx - c) / (size * 0.40)) ** 2 <= 1
    hu[body] = -100.0
    hu[body & inner] = 40.0
    spine = ((yy - (c - size * 0.26)) / (size * 0.06)) ** 2 + ((xx - c) / (size * 0.06)) ** 2 <= 1
    hu[spine] = 700.0  # posterior (low y in RAS) vertebra
    lz, ly, lx = depth * rng.uniform(0.45, 0.55), c + size * rng.uniform(0.0, 0.08), c + size * rng.uniform(0.14, 0.2)
    liver = (
        ((zz - lz) / (depth * 0.38)) ** 2 + ((yy - ly) / (size * 0.2)) ** 2 + ((xx - lx) / (size * 0.18)) ** 2
    ) <= 1
    liver &= inner
    hu[liver] = 95.0  # portal-venous enhanced parenchyma
    labels[liver] = 1
    for _ in range(int(rng.integers(1, 3))):
        idx = rng.integers(np.count_nonzero(liver))
        tz, ty, tx = (a[idx] for a in np.nonzero(liver))
        r = rng.uniform(size * 0.04, size * 0.07)
        tumour = (
            ((zz - tz) / max(r * depth / size * 2.5, 1.5)) ** 2 + ((yy - ty) / r) ** 2 + ((xx - tx) / r) ** 2
        ) <= 1
        tumour &= liver
        hu[tumour] = 15.0  # hypodense lesion
        labels[tumour] = 2
    hu += rng.normal(0, 10, hu.shape)
    # (z, y, x) -> (x, y, z) voxel order for NIfTI
    return np.transpose(hu, (2, 1, 0)).astype(np.int16), np.transpose(labels, (2, 1, 0))


def write_nifti3d(out: Path, rng: np.random.Generator, n: int, size: int = 96, depth: int = 24) -> SynthDataset:
    import nibabel as nib

    root = out / "synthetic-ct-liver3d"
    affine = np.diag([0.8, 0.8, 2.5, 1.0])  # RAS+ with 0.8 mm pixels and 2.5 mm slices
    for i in range(n):
        hu, labels = ct_volume(rng, size, depth)
        for folder, data in (("imagesTr", hu), ("labelsTr", labels)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            # gzip with mtime=0 so the same seed gives the same bytes (nib.save stamps the time)
            raw = nib.Nifti1Image(data, affine).to_bytes()
            (root / folder / f"case_{i:03d}.nii.gz").write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "synthetic-ct-liver3d",
                "description": "SYNTHETIC CT-like phantoms (HU), not patient data",
                "modality": {"0": "CT"},
                "labels": {"0": "background", "1": "liver", "2": "tumor"},
            },
            indent=1,
        )
    )
    spec = f"nifti:{root}?name=synthetic-ct-liver3d&organ=liver&window=soft-tissue"
    return SynthDataset(
        "synthetic-ct-liver3d",
        spec,
        f"{n} volumes x {depth} slices",
        "CT-like NIfTI volumes (HU) with liver + hypodense tumour labels",
    )


# --------------------------------------------------------------------------------------------
# 4. Detection (COCO): X-ray-like chest, 1-4 objects of two sizes
# --------------------------------------------------------------------------------------------


def chest_xray(
    rng: np.random.Generator, size: int = 128
) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
    """An X-ray-like chest phantom (air dark, tissue bright) with 1-4 nodules/masses and their boxes."""
    c = size / 2
    img = np.full((size, size), 40.0)
    thorax = _ellipse(size, c + size * 0.05, c, size * 0.46, size * 0.44)
    img[thorax] = 170.0
    lungs = [
        _ellipse(size, c, c - size * 0.2, size * 0.32, size * 0.15),
        _ellipse(size, c, c + size * 0.2, size * 0.32, size * 0.15),
    ]
    for lung in lungs:
        img[lung] = 70.0 + 8.0 * _smooth_noise(rng, size, 4)[lung]
    for k in range(6):  # ribs: faint bright arcs
        y = c - size * 0.28 + k * size * 0.1
        img[int(y) : int(y) + 2, int(size * 0.12) : int(size * 0.88)] += 25.0
    objects = []
    for _ in range(int(rng.integers(1, 5))):
        label = "mass" if rng.random() < 0.3 else "nodule"
        r = rng.uniform(size * 0.07, size * 0.1) if label == "mass" else rng.uniform(size * 0.025, size * 0.045)
        cy, cx = _random_point_in(lungs[int(rng.integers(2))], rng, margin=int(r) + 2)
        blob = _ellipse(size, cy, cx, r, r)
        img[blob] = 150.0 + rng.normal(0, 5, blob.sum())
        ys, xs = np.nonzero(blob)
        objects.append(
            (label, float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min()))
        )
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


def write_coco(out: Path, rng: np.random.Generator, n: int, size: int = 128) -> SynthDataset:
    root = out / "synthetic-nodule-det"
    categories = [{"id": 1, "name": "nodule"}, {"id": 2, "name": "mass"}]
    ids = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for i in range(n):
        image, objects = chest_xray(rng, size)
        name = f"chest_{i:04d}.png"
        save_png(image, root / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for label, x, y, w, h in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": ids[label],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {"description": "SYNTHETIC X-ray-like chest phantoms, not patient data"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (root / "annotations.json").write_text(json.dumps(data))
    spec = f"coco:{root}?name=synthetic-nodule-det&modality=X-ray&organ=chest"
    return SynthDataset(
        "synthetic-nodule-det", spec, f"{n} PNG", "X-ray-like chest phantoms, 1-4 nodules/masses with COCO boxes"
    )


# --------------------------------------------------------------------------------------------
# 5. DICOM series with fake identities (exercises de-identification) + a MONOCHROME1 CR
# --------------------------------------------------------------------------------------------

FAKE_IDENTITY = {
    "PatientName": "SYNTHETIC^PHANTOM^NOTREAL",
    "PatientID": "SYN-PID-0042",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyDate": "20240102",
    "StudyTime": "101500",
    "SeriesDate": "20240102",
    "AccessionNumber": "SYNACC0042",
    "InstitutionName": "Synthetic General Hospital",
    "ReferringPhysicianName": "SYNTHETIC^REFERRER",
    "StudyDescription": "SYNTHETIC PHANTOM STUDY",
}


def head_ct_slice(rng: np.random.Generator, size: int, level: float, bleed: bool) -> np.ndarray:
    """An axial head-CT-like slice in HU at relative height ``level`` in [0, 1] (skull, brain, CSF).

    Only a narrow brain window (W80/L40, written into the file) separates the bleed (~65 HU) from
    brain (~35 HU); the skull at ~1000 HU would dominate any min-max stretch.
    """
    c = size / 2
    shrink = np.sqrt(max(0.05, 1.0 - (2.0 * level - 1.0) ** 2))  # ellipsoid cross-section
    ry, rx = size * 0.44 * shrink, size * 0.36 * shrink
    hu = np.full((size, size), -1000.0)
    hu[_ellipse(size, c, c, ry, rx)] = 1000.0  # skull
    brain = _ellipse(size, c, c, ry - 4, rx - 4)
    hu[brain] = 35.0 + 3.0 * _smooth_noise(rng, size, 5)[brain]
    vent = size * 0.08 * max(0.0, 1.0 - abs(level - 0.5) * 3)
    if vent > 1:
        hu[
            (
                _ellipse(size, c - 2, c - 5, vent * 1.6, vent * 0.5)
                | _ellipse(size, c - 2, c + 5, vent * 1.6, vent * 0.5)
            )
            & brain
        ] = 5.0
    if bleed:
        hu[_ellipse(size, c - ry * 0.3, c + rx * 0.45, size * 0.07, size * 0.05) & brain] = 65.0
    return hu + rng.normal(0.0, 3.0, hu.shape)


def knee_xray(rng: np.random.Generator, size: int) -> np.ndarray:
    """A knee-radiograph-like image in 0..255 (bone bright): femur above, tibia below, joint gap."""
    yy, xx = _grid(size)
    c = size / 2 + rng.normal(0, 2)
    img = np.full((size, size), 30.0)
    img[np.abs(xx - c) < size * 0.3] = 90.0  # soft tissue
    femur = (np.abs(xx - c) < size * (0.12 + 0.1 * np.clip((yy - size * 0.25) / (size * 0.2), 0, 1))) & (
        yy < size * 0.46
    )
    tibia = (np.abs(xx - c) < size * (0.2 - 0.08 * np.clip((yy - size * 0.55) / (size * 0.2), 0, 1))) & (
        yy > size * 0.52
    )
    img[femur | tibia] = 210.0
    img += 8.0 * _smooth_noise(rng, size, 4) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255)


def write_dicom_series(out: Path, rng: np.random.Generator, series: int, slices: int, size: int = 96) -> SynthDataset:
    """Head-CT series (stored values + RescaleIntercept, brain window in the file, fake identity)
    and a few MONOCHROME1 knee radiographs. Series 2, 4, ... contain a hyperdense bleed."""
    from pydicom.uid import generate_uid

    root = out / "synthetic-dicom"
    count = 0
    for s in range(series):
        token = str(rng.integers(2**62))  # UIDs derived from the seed: same seed, same files
        study, series_uid = generate_uid(entropy_srcs=[token, "study"]), generate_uid(entropy_srcs=[token, "series"])
        for k in range(slices):
            level = (k + 0.5) / slices
            hu = head_ct_slice(rng, size, level, bleed=s % 2 == 1 and 0.3 <= level <= 0.7)
            stored = np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)  # stored = HU - intercept
            header = {
                **FAKE_IDENTITY,
                "Modality": "CT",
                "BodyPartExamined": "HEAD",
                "StudyInstanceUID": study,
                "SeriesInstanceUID": series_uid,
                "SOPInstanceUID": generate_uid(entropy_srcs=[token, str(k)]),
                "SeriesNumber": s + 1,
                "InstanceNumber": k + 1,
                "RescaleIntercept": -1024,
                "RescaleSlope": 1,
                "WindowCenter": 40,
                "WindowWidth": 80,
                "SliceThickness": 5.0,
                "PixelSpacing": [0.9, 0.9],
                "Manufacturer": "gmai synthetic phantom",
                "BurnedInAnnotation": "NO",
            }
            write_dicom(root / f"series_{s + 1:02d}" / f"slice_{k:03d}.dcm", stored, header)
            count += 1
    token = str(rng.integers(2**62))
    for k in range(max(1, slices // 3)):  # MONOCHROME1 radiographs: low stored values are white
        stored = (4095 - knee_xray(rng, size) * 16).astype(np.uint16)
        uids = {
            key: generate_uid(entropy_srcs=[token, key, str(0 if key != "SOPInstanceUID" else k)])
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        }
        header = {
            **FAKE_IDENTITY,
            **uids,
            "Modality": "CR",
            "BodyPartExamined": "KNEE",
            "SeriesNumber": 99,
            "InstanceNumber": k + 1,
            "ViewPosition": "AP",
            "Manufacturer": "gmai synthetic phantom",
        }
        write_dicom(root / "series_cr" / f"cr_{k:03d}.dcm", stored, header, photometric="MONOCHROME1")
        count += 1
    spec = f"dicom:{root}?name=synthetic-dicom"
    return SynthDataset(
        "synthetic-dicom",
        spec,
        f"{count} DICOM files",
        "head-CT series (rescale, brain window, fake PatientName/ID/dates for de-id) + MONOCHROME1 knee CR",
    )


# --------------------------------------------------------------------------------------------
# 6. MedMNIST-style npz: microscopy-like cells, 28x28
# --------------------------------------------------------------------------------------------


def cell_image(rng: np.random.Generator, label: str, size: int = 28) -> np.ndarray:
    c = size / 2 + rng.normal(0, 1.0, 2)
    img = np.full((size, size), 225.0)
    cell = _ellipse(size, c[0], c[1], size * 0.36, size * 0.36 * rng.uniform(0.85, 1.15))
    img[cell] = 190.0
    if label == "round cell":  # one large dark round nucleus
        img[_ellipse(size, c[0], c[1], size * 0.22, size * 0.22)] = 70.0
    elif label == "lobed cell":  # 3-4 small dark lobes
        for k in range(int(rng.integers(3, 5))):
            a = 2 * np.pi * k / 4 + rng.uniform(0, 0.5)
            img[_ellipse(size, c[0] + 4 * np.sin(a), c[1] + 4 * np.cos(a), 2.6, 2.6)] = 80.0
    elif label == "pale disc":  # no nucleus, pale centre
        img[_ellipse(size, c[0], c[1], size * 0.14, size * 0.14)] = 215.0
    else:
        raise ValueError(f"unknown cell class {label!r}")
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_npz(out: Path, rng: np.random.Generator, n_train: int) -> SynthDataset:
    path = out / "synthetic-cellmnist.npz"
    arrays = {}
    total = 0
    for split, n in (("train", n_train), ("val", max(3, n_train // 8)), ("test", max(3, n_train // 8))):
        labels = np.arange(n) % len(CELL_CLASSES)
        rng.shuffle(labels)
        arrays[f"{split}_images"] = np.stack([cell_image(rng, CELL_CLASSES[int(y)]) for y in labels])
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
        total += n
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "label": {str(i): c for i, c in enumerate(CELL_CLASSES)},
                "description": "SYNTHETIC microscopy-like cells, not patient data",
            },
            indent=1,
        )
    )
    spec = f"npz:{path}?name=synthetic-cellmnist&modality=microscopy&organ=blood"
    return SynthDataset(
        "synthetic-cellmnist", spec, f"{total} arrays", "MedMNIST-style 28x28 microscopy-like cells, 3 classes"
    )


# --------------------------------------------------------------------------------------------
# Real images shipped by pip packages
# --------------------------------------------------------------------------------------------

# (destination folder, file name, which package ships it)
_REAL_DICOMS = (
    ("ct", "CT_small.dcm", "pydicom"),
    ("ct", "693_UNCI.dcm", "pydicom-data"),
    ("mr", "MR_small.dcm", "pydicom"),
    ("mr-multiframe", "emri_small.dcm", "pydicom-data"),
    ("cr-chest", "RG1_UNCI.dcm", "pydicom-data"),
    ("cr-extremity", "RG3_UNCI.dcm", "pydicom-data"),
    ("us", "US1_UNCI.dcm", "pydicom-data"),
    ("us-palette", "OBXXXX1A.dcm", "pydicom-data"),
)


def _package_file(package: str, name: str) -> Path | None:
    """Locate a data file inside an installed package without triggering any download."""
    import importlib.util

    module = {"pydicom": "pydicom", "pydicom-data": "data_store", "nibabel": "nibabel", "scikit-image": "skimage"}[
        package
    ]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    base = Path(spec.origin).parent
    sub = {"pydicom": "data/test_files", "pydicom-data": "data", "nibabel": "tests/data", "scikit-image": "data"}[
        package
    ]
    candidate = base / sub / name
    return candidate if candidate.is_file() else None


def default_real_sources(out: Path) -> tuple[list[SynthDataset], list[str]]:
    """Arrange real pip-shipped images under OUT; returns (datasets, names of files not found)."""
    from gmai.data.imaging import read_image

    datasets, missing = [], []
    dicom_root = out / "real-dicom"
    copied = 0
    for folder, name, package in _REAL_DICOMS:
        src = _package_file(package, name)
        if src is None:
            missing.append(f"{package}:{name}")
            continue
        (dicom_root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dicom_root / folder / name)
        copied += 1
    if copied:
        datasets.append(
            SynthDataset(
                "pydicom-testdata",
                f"dicom:{dicom_root}?name=pydicom-testdata&max_frames=6",
                f"{copied} DICOM files",
                "real DICOM test files shipped in pydicom/pydicom-data (MIT): CT, MR, multi-frame MR, CR, US",
            )
        )
    anat = _package_file("nibabel", "anatomical.nii")
    if anat is None:
        missing.append("nibabel:anatomical.nii")
    else:
        (out / "real-nifti").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(anat, out / "real-nifti" / "anatomical.nii")
        datasets.append(
            SynthDataset(
                "nibabel-anatomical",
                f"nifti:{out / 'real-nifti'}?name=nibabel-anatomical&modality=MR&organ=brain&max_slices=12",
                "1 volume, 12 slices used",
                "nibabel's anatomical.nii (real head MR), 12 axial slices",
            )
        )
    # provenance and licence as scikit-image's data docstrings state them
    photos = (
        (
            "real-fundus",
            "fundus",
            "eye",
            ("retina.jpg", "microaneurysms.png"),
            "scikit-image retina.jpg (Wikimedia, normal left eye, CC0) + microaneurysms.png (FAU, CC0), whole",
        ),
        (
            "real-pathology",
            "pathology",
            "colon",
            ("ihc.png",),
            "scikit-image ihc.png (colonic glands, IHC/DAB + hematoxylin, no known copyright), 3x3 tiles",
        ),
    )
    for folder, modality, organ, names, what in photos:
        count = 0
        for name in names:
            src = _package_file("scikit-image", name)
            if src is None:
                missing.append(f"scikit-image:{name}")
                continue
            for k, tile in enumerate(_tiles(read_image(src), modality)):
                save_png(tile, out / folder / f"{Path(name).stem}_{k:02d}.png")
                count += 1
        if count:
            datasets.append(
                SynthDataset(
                    f"skimage-{modality}",
                    f"imagefolder:{out / folder}?name=skimage-{modality}&folder_is=none&modality={modality}&organ={organ}",
                    f"{count} PNG",
                    what,
                )
            )
    return datasets, missing


def _tiles(image: np.ndarray, modality: str) -> list[np.ndarray]:
    """Whole fundus photographs (the disc and vessels need the whole view); 3x3 tiles otherwise."""
    if modality == "fundus":
        return [image]
    h, w = image.shape[:2]
    th, tw = h // 3, w // 3
    return [image[r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(3) for c in range(3)]


# --------------------------------------------------------------------------------------------
# The whole default corpus
# --------------------------------------------------------------------------------------------


def write_corpus(
    out: str | Path,
    *,
    seed: int = 0,
    scale: float = 1.0,
    real: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SynthDataset], list[str]]:
    """Write every synthetic dataset (and, with ``real``, the pip-shipped real images) under OUT.

    ``scale`` multiplies the dataset sizes (1.0 gives roughly 1,000 images in total). Writes
    ``OUT/sources.txt`` (one source spec per line) and ``OUT/SYNTHETIC.md``. Deterministic for
    a seed: each dataset draws from its own generator derived from (seed, dataset index).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = lambda base: max(2, int(round(base * scale)))  # noqa: E731
    writers = (
        lambda r: write_classification(out, r, per_class=n(60)),
        lambda r: write_seg2d(out, r, n=n(150)),
        lambda r: write_nifti3d(out, r, n=max(2, int(round(5 * scale)))),
        lambda r: write_coco(out, r, n=n(120)),
        lambda r: write_dicom_series(out, r, series=2, slices=max(4, int(round(10 * scale)))),
        lambda r: write_npz(out, r, n_train=n(210)),
        lambda r: write_totalseg_volumes(out, r, n=max(4, int(round(12 * scale))), test=max(2, int(round(4 * scale)))),
    )
    datasets: list[SynthDataset] = []
    for index, writer in enumerate(writers):
        datasets.append(writer(np.random.default_rng([seed, index])))
        if progress:
            progress(datasets[-1].name)
    missing: list[str] = []
    if real:
        real_sets, missing = default_real_sources(out)
        datasets.extend(real_sets)
        if progress:
            progress("real pip-shipped images")
    (out / "sources.txt").write_text("".join(d.spec + "\n" for d in datasets))
    (out / "SYNTHETIC.md").write_text(_card(datasets, missing, seed, scale))
    return datasets, missing


def _card(datasets: list[SynthDataset], missing: list[str], seed: int, scale: float) -> str:
    lines = [
        "# Default corpus",
        "",
        f"Written by `gmai data synth` (seed {seed}, scale {scale}). Datasets named `synthetic-*` are",
        "numpy phantoms, NOT patient data; the others are real images shipped inside pip packages.",
        "",
        "| dataset | written | what | spec |",
        "|---|---|---|---|",
    ]
    lines += [f"| {d.name} | {d.inputs} | {d.what} | `{d.spec}` |" for d in datasets]
    if missing:
        lines += ["", "Not found (package missing): " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def synth_command(
    out: Path = typer.Argument(..., help="Output folder."),
    seed: int = typer.Option(0, help="Random seed (same seed, same bytes)."),
    scale: float = typer.Option(1.0, help="Multiply dataset sizes (1.0 is about 1,000 images)."),
    real: bool = typer.Option(True, help="Also arrange real images shipped by pip packages."),
) -> None:
    """Write SYNTHETIC phantom datasets (and real pip-shipped images) in standard layouts."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with console.status("writing datasets...") as status:
        datasets, missing = write_corpus(
            out, seed=seed, scale=scale, real=real, progress=lambda name: status.update(f"wrote {name}")
        )
    table = Table(title=f"default corpus in {out}")
    for column in ("dataset", "written", "what"):
        table.add_column(column)
    for d in datasets:
        table.add_row(d.name, d.inputs, d.what)
    console.print(table)
    if missing:
        console.print(f"[yellow]not found (install gmai[demo-data]): {', '.join(missing)}")
    console.print(f"source specs: {Path(out) / 'sources.txt'}")
    if not datasets:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------
# 7. A CT series with a DICOM SEG (highdicom) and an RTSTRUCT (rt-utils) that annotate it
# --------------------------------------------------------------------------------------------

CT_SERIES_STRUCTURES = {"seg": ("liver", "tumor"), "rtstruct": ("spleen", "liver")}


def ct_series_masks(rng: np.random.Generator, size: int = 64, slices: int = 12) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(HU stack (slices, rows, cols) int16, {structure: bool mask (slices, rows, cols)}).

    Axial slices in DICOM's LPS patient frame with the standard orientation (rows run to the patient's
    left), so the liver (patient's right) lies on the image's left and the spleen on its right.
    """
    zz, yy, xx = np.mgrid[0:slices, 0:size, 0:size].astype(np.float64)
    c = size / 2
    body = ((yy - c) / (size * 0.40)) ** 2 + ((xx - c) / (size * 0.46)) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0)
    lz, ly, lx = slices * rng.uniform(0.45, 0.55), c + size * rng.uniform(-0.04, 0.04), c - size * 0.2
    liver = (((zz - lz) / (slices * 0.38)) ** 2 + ((yy - ly) / (size * 0.2)) ** 2
             + ((xx - lx) / (size * 0.16)) ** 2) <= 1
    sz, sx = slices * rng.uniform(0.35, 0.5), c + size * 0.24
    spleen = (((zz - sz) / (slices * 0.25)) ** 2 + ((yy - c) / (size * 0.1)) ** 2 + ((xx - sx) / (size * 0.08)) ** 2) <= 1
    tumor = (((zz - lz) / (slices * 0.15)) ** 2 + ((yy - ly) / (size * 0.07)) ** 2
             + ((xx - lx) / (size * 0.07)) ** 2) <= 1
    hu[liver], hu[spleen], hu[tumor] = 95.0, 60.0, 15.0
    hu += rng.normal(0, 8, hu.shape)
    return hu.astype(np.int16), {"liver": liver, "tumor": tumor & liver, "spleen": spleen}


def write_ct_seg_rtstruct(
    root: Path, rng: np.random.Generator, *, size: int = 64, slices: int = 12, spacing: float = 0.8,
    thickness: float = 2.5, labels: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Write ``root/ct/*.dcm`` (a CT series, pydicom, with a fake identity), ``root/seg.dcm`` (a DICOM SEG
    of liver + tumor written by highdicom) and ``root/rtstruct.dcm`` (an RTSTRUCT of spleen + liver written
    by rt-utils). Returns the masks they were made from, {structure: bool (slices, rows, cols)}.
    ``labels`` writes other SegmentLabel / ROIName text for some structures (de-identification tests).
    """
    labels = labels or {}
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid
    from rt_utils import RTStructBuilder

    hu, masks = ct_series_masks(rng, size, slices)
    token = str(rng.integers(2**62))
    uid = lambda *parts: generate_uid(entropy_srcs=[token, *parts])  # noqa: E731
    for k in range(slices):
        header = {
            **FAKE_IDENTITY, "Modality": "CT", "BodyPartExamined": "ABDOMEN", "StudyID": "1",
            "StudyInstanceUID": uid("study"), "SeriesInstanceUID": uid("series"), "SOPInstanceUID": uid("slice", str(k)),
            "FrameOfReferenceUID": uid("frame"), "SeriesNumber": 1, "InstanceNumber": k + 1,
            "ImagePositionPatient": [-size * spacing / 2, -size * spacing / 2, k * thickness],
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [spacing, spacing],
            "SliceThickness": thickness, "RescaleIntercept": -1024, "RescaleSlope": 1,
            "Manufacturer": "gmai synthetic phantom", "BurnedInAnnotation": "NO",
        }
        write_dicom(root / "ct" / f"slice_{k:03d}.dcm", (hu[k] + 1024).astype(np.uint16), header)
    series = sorted((pydicom.dcmread(p) for p in (root / "ct").glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="gmai synthetic phantom", version="1", family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=labels.get(name, name),
            segmented_property_category=codes.SCT.Organ if name != "tumor" else codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Liver if name == "liver" else codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        )
        for i, name in enumerate(CT_SERIES_STRUCTURES["seg"])
    ]
    pixel_array = np.stack([masks[name] for name in CT_SERIES_STRUCTURES["seg"]], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=series, pixel_array=pixel_array, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=uid("seg-series"), series_number=2,
        sop_instance_uid=uid("seg"), instance_number=1, manufacturer="gmai", manufacturer_model_name="synthetic",
        software_versions="1", device_serial_number="0", omit_empty_frames=True,
    )
    seg.save_as(str(root / "seg.dcm"))
    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(root / "ct"))
    for name in CT_SERIES_STRUCTURES["rtstruct"]:
        # rt-utils takes masks as (rows, columns, slices) in its own slice order (ascending position)
        rtstruct.add_roi(mask=np.transpose(masks[name], (1, 2, 0)), name=labels.get(name, name))
    rtstruct.save(str(root / "rtstruct.dcm"))
    return masks



# --------------------------------------------------------------------------------------------
# 8. CT volumes in the TotalSegmentator layout (one mask per structure), read as slice sequences
# --------------------------------------------------------------------------------------------

# meta.csv as the TotalSegmentator release writes it (semicolon-separated, UTF-8 with BOM)
TOTALSEG_META_COLUMNS = ("image_id", "age", "gender", "institute", "study_type", "split", "manufacturer",
                         "scanner_model", "kvp", "pathology", "pathology_location")


def abdomen_volume(rng: np.random.Generator, size: int = 64, depth: int = 16) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(HU volume, {structure: bool mask}) in RAS+ voxel order: liver (+ a hypodense tumour in about half the
    cases) on the patient's right, spleen on the left, each over its own range of slices."""
    hu, labels = ct_volume(rng, size, depth)
    xx, yy, zz = np.mgrid[0:size, 0:size, 0:depth].astype(np.float64)
    c = size / 2
    sz = depth * rng.uniform(0.3, 0.7)
    spleen = (((xx - (c - size * 0.24)) / (size * 0.08)) ** 2 + ((yy - (c + size * rng.uniform(-0.05, 0.05)))
              / (size * 0.1)) ** 2 + ((zz - sz) / (depth * 0.22)) ** 2) <= 1
    hu[spleen] = 60
    # one mask per voxel class, as TotalSegmentator's are (they do not overlap): the tumour is cut out of the liver
    if rng.random() < 0.5:
        masks = {"liver": labels == 1, "spleen": spleen & (labels == 0), "tumor": labels == 2}
    else:  # no lesion in this case: paint the tumour back as liver
        hu[labels == 2] = 95
        masks = {"liver": labels > 0, "spleen": spleen & (labels == 0)}
    return hu, masks


def write_totalseg_volumes(out: Path, rng: np.random.Generator, n: int, test: int, size: int = 64,
                           depth: int = 16, slices: int = 3) -> SynthDataset:
    """``synthetic-ct-abdomen-slices``: case folders ``sNNNN/ct.nii.gz`` + ``sNNNN/segmentations/<structure>.nii.gz``
    (an empty mask where a case has no tumour, as TotalSegmentator writes one file per class in every case) and a
    ``meta.csv`` putting the last ``test`` cases in the test split; read as ``slices`` images per volume."""
    import nibabel as nib

    root = out / "synthetic-ct-abdomen-slices"
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    rows = []
    for i in range(n):
        case = root / f"s{i:04d}"
        (case / "segmentations").mkdir(parents=True, exist_ok=True)
        hu, masks = abdomen_volume(rng, size, depth)
        files = {"ct.nii.gz": hu.astype(np.int16)}
        for name in ("liver", "spleen", "tumor"):
            files[f"segmentations/{name}.nii.gz"] = masks.get(name, np.zeros(hu.shape, bool)).astype(np.uint8)
        for name, data in files.items():
            raw = nib.Nifti1Image(data, affine).to_bytes()
            (case / name).write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
        split = "test" if i >= n - test else "train"
        rows.append(";".join([case.name, "", "", "", "ct abdomen", split, "", "", "", "", ""]))
    (root / "meta.csv").write_text("\ufeff" + ";".join(TOTALSEG_META_COLUMNS) + "\n" + "\n".join(rows) + "\n",
                                   encoding="utf-8")
    spec = (f"nifti:{root}?name=synthetic-ct-abdomen-slices&organ=abdomen&modality=CT&window=soft-tissue"
            f"&volume=slices:{slices}&volume_only=true")
    return SynthDataset("synthetic-ct-abdomen-slices", spec, f"{n} volumes ({test} test) x {depth} slices",
                        f"CT-like volumes, one mask per structure (TotalSegmentator layout), read as {slices}-slice "
                        "sequences")
