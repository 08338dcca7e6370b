import dspy
import pytest

from dspyc.errors import DspycError
from dspyc.optimizers import Recipe, available, build_optimizer, load_recipe


def metric(ex, pred, trace=None):
    return 1.0


@pytest.mark.parametrize("name", ["bootstrap", "random_search", "mipro_light", "gepa_light", "simba"])
def test_every_shipped_recipe_builds(name):
    recipe = load_recipe(name)
    with dspy.context(lm=dspy.utils.DummyLM([])):
        optimizer, kwargs = build_optimizer(recipe, metric, num_threads=2)
    assert type(optimizer).__name__ == recipe.optimizer
    assert isinstance(kwargs, dict)


def test_all_recipes_listed():
    assert {"bootstrap", "random_search", "mipro_light", "gepa_light", "simba"} <= set(available())


def test_unknown_recipe_and_bad_fields_are_one_line_errors(tmp_path):
    with pytest.raises(DspycError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: BootstrapFewShot\nparms: {}\n")
    with pytest.raises(DspycError, match="field 'parms'"):
        load_recipe(str(bad))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("optimizer: Magic\n")
    with pytest.raises(DspycError, match="optimizer must be one of"):
        load_recipe(str(wrong))


def test_unknown_param_is_refused():
    with pytest.raises(DspycError, match="has no parameter"):
        build_optimizer(Recipe(name="x", optimizer="BootstrapFewShot", params={"bogus": 1}), metric)
