from pathlib import Path

import pytest

from gmai.train.config import RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_paper_recipe_has_the_papers_stages():
    cfg = load_recipe(RECIPES / "gmai-vl-7b.yaml")
    assert cfg.enabled_stages() == [1, 2, 3]
    assert [cfg.stages[k].lr for k in (1, 2, 3)] == [1e-3, 1e-4, 1e-5]
    assert cfg.stages[1].trainable == ["projector"]
    assert cfg.stages[2].trainable == ["projector", "vision"]
    assert cfg.stages[3].trainable == ["projector", "vision", "llm"]
    assert all(cfg.stages[k].max_length == 2048 and cfg.stages[k].packing for k in (1, 2, 3))
    assert cfg.stages[3].quality_filter and not cfg.stages[1].quality_filter
    # the paper's Stage III mixture table
    assert cfg.stages[3].mixture["other_med_caption"] == 0.05 and cfg.stages[3].mixture["text_dialogue"] == 1.0
    assert cfg.stages[1].mixture["text_dialogue"] == 0.0


def test_tiny_recipe_has_a_reported_warmup_stage():
    cfg = load_recipe(RECIPES / "tiny.yaml")
    assert cfg.enabled_stages() == [0, 1, 2, 3]
    assert cfg.stages[0].kind == "lm_warmup" and "not in the paper" in cfg.stages[0].name


def test_dotted_overrides_reach_every_field():
    cfg = load_recipe(RECIPES / "tiny.yaml", ["stages.1.lr=1e-2", "data.max_records=7", "stages.3.packing=false",
                                              "run.seed=5", "stages.2.mixture.report=0.5"])
    assert cfg.stages[1].lr == 0.01 and isinstance(cfg.stages[1].lr, float)
    assert cfg.data.max_records == 7 and cfg.run.seed == 5
    assert cfg.stages[3].packing is False
    assert cfg.stages[2].mixture["report"] == 0.5


def test_typos_and_bad_values_are_errors(tmp_path):
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(RECIPES / "tiny.yaml", ["stages.1.learning_rate=1"])
    with pytest.raises(RecipeError, match="expected float"):
        load_recipe(RECIPES / "tiny.yaml", ["stages.1.lr=fast"])
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(RECIPES / "tiny.yaml", ["stages.1.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  1: {trainable: [projector, decoder]}\n")
    with pytest.raises(RecipeError, match="unknown part"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
