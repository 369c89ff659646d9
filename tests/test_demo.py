from pathlib import Path

import pytest

from gmai.demo import DEFAULT_VQA_RAD, _find_vqa_rad


def test_demo_finds_vqa_rad_beside_the_repository_from_any_directory(monkeypatch, tmp_path):
    if not (DEFAULT_VQA_RAD / "testset.json").is_file():
        pytest.skip("../shared/data/vqa-rad is not present")
    monkeypatch.chdir(tmp_path)  # not the repository: discovery must not depend on the working directory
    assert _find_vqa_rad(None) == DEFAULT_VQA_RAD.resolve()


def test_demo_refuses_a_vqa_rad_path_without_the_json_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="testset.json"):
        _find_vqa_rad(str(tmp_path))
    assert Path(tmp_path).exists()
