"""The project's modality vocabulary, in one place: the data engine, the question templates, the
evaluation rules and the RL rewards all read it from here.

- :data:`SPELLINGS`: modality spellings seen in datasets (lower case) -> the project's word;
- :data:`NOUNS`: the project's word -> the noun templates say ("CT" -> "CT scan");
- :data:`DEPARTMENTS`: the project's word -> the default clinical department;
- :data:`ANSWER_SYNONYMS`: the project's word -> other names a reply may give it ("magnetic resonance
  imaging" for MR), used only by the scoring rule that accepts synonyms (``gmai-synonyms@1``).
"""

from __future__ import annotations

SPELLINGS = {
    "ct": "CT", "mr": "MR", "mri": "MR", "x-ray": "X-ray", "xray": "X-ray", "x ray": "X-ray", "cr": "X-ray",
    "dx": "X-ray", "radiograph": "X-ray", "us": "ultrasound", "ultrasound": "ultrasound", "pet": "PET",
    "fundus": "fundus", "oct": "OCT", "pathology": "pathology", "histopathology": "pathology",
    "microscopy": "microscopy", "dermoscopy": "dermoscopy", "endoscopy": "endoscopy",
    "mammography": "mammography", "radiology": "radiology", "nuclear medicine": "nuclear medicine",
}

NOUNS = {
    "CT": "CT scan", "MR": "MRI scan", "X-ray": "X-ray", "ultrasound": "ultrasound image",
    "fundus": "fundus photograph", "pathology": "histopathology image", "endoscopy": "endoscopic image",
    "dermoscopy": "dermoscopic image", "microscopy": "microscopy image", "PET": "PET scan", "OCT": "OCT scan",
    "mammography": "mammogram", "radiology": "radiology image",
}

DEPARTMENTS = {
    "CT": "radiology", "MR": "radiology", "X-ray": "radiology", "ultrasound": "radiology", "radiology": "radiology",
    "PET": "nuclear medicine", "nuclear medicine": "nuclear medicine", "mammography": "radiology",
    "fundus": "ophthalmology", "OCT": "ophthalmology", "pathology": "pathology", "microscopy": "pathology",
    "dermoscopy": "dermatology", "endoscopy": "gastroenterology",
}

ANSWER_SYNONYMS = {
    "MR": ["mri", "mr", "magnetic resonance imaging", "magnetic resonance", "mri scan", "mr scan", "mr image"],
    "CT": ["ct", "computed tomography", "ct scan", "cat scan", "computerized tomography", "computerised tomography"],
    "X-ray": ["x ray", "xray", "radiograph", "plain film", "plain radiograph", "x ray image", "roentgenogram"],
    "ultrasound": ["ultrasound", "us", "sonography", "ultrasonography", "sonogram", "ultrasound image"],
    "PET": ["pet", "positron emission tomography", "pet scan"],
    "fundus": ["fundus", "fundus photograph", "fundus image", "fundus photo", "retinal photograph"],
    "OCT": ["oct", "optical coherence tomography"],
    "pathology": ["histopathology", "histopathology image", "pathology slide"],
    "dermoscopy": ["dermoscopy", "dermatoscopy", "dermoscopic image"],
    "endoscopy": ["endoscopy", "endoscopic image"],
    "mammography": ["mammography", "mammogram"],
}


def normalise_modality(text: str) -> str:
    """A dataset's spelling -> the project's word; unknown spellings are kept (stripped)."""
    return SPELLINGS.get(text.strip().lower(), text.strip())


def modality_noun(modality: str) -> str:
    """'CT' -> 'CT scan', 'fundus' -> 'fundus photograph'; unknown names -> '<name> image'."""
    if not modality.strip():
        return "medical image"
    return NOUNS.get(normalise_modality(modality), f"{modality.strip()} image")


def default_department(modality: str) -> str:
    return DEPARTMENTS.get(modality, "")
