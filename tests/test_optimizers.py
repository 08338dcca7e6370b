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


def test_a_teacher_lm_writes_the_demos(paris_teaching):
    """The student LM answers wrong; the recipe's teacher answers right, so its passing traces become the demos."""
    adapter, student, teacher, train, exact = (
        paris_teaching.adapter,
        paris_teaching.student,
        paris_teaching.teacher,
        paris_teaching.train,
        paris_teaching.metric,
    )
    recipe = Recipe(
        name="t", optimizer="BootstrapFewShot", params={"max_bootstrapped_demos": 2, "max_labeled_demos": 0}
    )
    with dspy.context(lm=student, adapter=adapter):
        optimizer, kwargs = build_optimizer(recipe, exact, teacher=teacher)
        compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=train, **kwargs)
    demos = compiled.demos
    assert len(demos) == 2 and all(d.answer == "Paris" for d in demos)
    with dspy.context(lm=student, adapter=adapter):  # without the teacher nothing passes, so no demos
        optimizer, kwargs = build_optimizer(recipe, exact)
        assert optimizer.compile(dspy.Predict("question -> answer"), trainset=train, **kwargs).demos == []


def test_a_teacher_needs_an_optimizer_that_takes_one():
    with pytest.raises(DspycError, match="takes no teacher"):
        build_optimizer(
            Recipe(name="x", optimizer="GEPA", params={"auto": "light"}), metric, teacher=dspy.utils.DummyLM([])
        )


def test_prewarm_runs_the_teacher_over_all_train_examples_only_when_it_can_help():
    from dspyc.optimizers import prewarm_bootstrap

    seen = []

    class Echo(dspy.Module):
        def forward(self, question):
            seen.append(question)
            return dspy.Prediction(answer=question)

    train = [dspy.Example(question=f"q{i}", answer=f"q{i}").with_inputs("question") for i in range(5)]
    cached = dspy.utils.DummyLM([])
    cached.cache = True
    plain = Recipe(name="b", optimizer="BootstrapFewShot", params={"max_labeled_demos": 0})
    with dspy.context(lm=cached):
        optimizer, _ = build_optimizer(plain, metric)
        assert prewarm_bootstrap(optimizer, Echo(), train, metric, num_threads=3)
        assert sorted(seen) == [ex.question for ex in train]
        labelled, _ = build_optimizer(
            Recipe(name="l", optimizer="BootstrapFewShot", params={"max_labeled_demos": 2}), metric
        )
        assert not prewarm_bootstrap(
            labelled, Echo(), train, metric, num_threads=3
        )  # its teacher's demos differ per example
    cached.cache = False
    with dspy.context(lm=cached):
        assert not prewarm_bootstrap(optimizer, Echo(), train, metric, num_threads=3)  # nothing would be reused
    assert len(seen) == 5


def test_a_recipe_missing_a_required_parameter_fails_in_one_line():
    with pytest.raises(DspycError, match="ConfigSearch needs parameter\\(s\\) space under params"):
        build_optimizer(Recipe(name="x", optimizer="ConfigSearch"), metric)
