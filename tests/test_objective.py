"""Compile for cost: candidates, the cheapest-first search with its non-inferiority rule, the frontier, the decision,
the champion and re-optimization rules, and the recipes and flags that set an objective."""

from dataclasses import dataclass, field
from typing import get_args

import dspy
import pytest

from dspyc import objective as obj
from dspyc.compiler import CallCosts, Evaluation, _cost_cell
from dspyc.errors import DspycError
from dspyc.objective import Candidate


def ev(scores: list[float], tokens: float, outputs: str = "") -> Evaluation:
    """An evaluation with per-example scores and `tokens` prompt tokens per run (no output tokens)."""
    rows = [{"id": str(i), "score": s, "outputs": {"answer": f"{outputs}{i}"}} for i, s in enumerate(scores)]
    cost = {
        "runs": len(scores),
        "prompt_tokens_per_run": tokens,
        "output_tokens_per_run": 0.0,
        "run_p50_s": tokens / 100,
        "machine_s_per_run": tokens / 1000,
    }
    return Evaluation({"metric": sum(scores) / len(scores)}, rows, cost)


@dataclass
class FakeEvaluate:
    """Stands in for evaluate_many: each module is a dict naming its dev scores and its tokens per run."""

    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, jobs):
        self.calls.append([label for label, _, _ in jobs])
        return [ev(m["scores"][: len(examples)], m["tokens"], m.get("outputs", m["name"])) for _, m, examples in jobs]


def cand(name: str, scores: list[float], tokens: float, origin="settings", **kw) -> Candidate:
    return Candidate(name, {"name": name, "scores": scores, "tokens": tokens, **kw}, {"k": name}, origin=origin)


def uncompiled(scores: list[float], tokens: float) -> Candidate:
    c = cand("uncompiled", scores, tokens, origin="uncompiled")
    c.dev, c.dev_cost = ev(scores, tokens, "uncompiled"), tokens
    return c


ALL_RIGHT = [1.0] * 30


def run(objective, candidates, base, margin=0.03, probe=3):
    fake = FakeEvaluate()
    result = obj.search(
        objective,
        candidates,
        base,
        [dspy.Example(id=i) for i in range(probe)],
        [dspy.Example(id=i) for i in range(30)],
        fake,
        measure="tokens",
        margin=margin,
        price=0.1,
        resamples=2000,
        seed=0,
    )
    return result, fake


def test_cost_scores_cheapest_first_and_stops_at_the_first_that_is_not_worse():
    base = uncompiled(ALL_RIGHT, 1000)
    tiny = cand("tiny", [0.0] * 15 + [1.0] * 15, 100)  # half as good: fails
    small = cand("small", ALL_RIGHT, 400)  # as good: the answer
    mid = cand("mid", ALL_RIGHT, 700)  # as good, dearer: never scored
    dear = cand("dear", ALL_RIGHT, 1500)  # dearer than uncompiled on the probe: never scored for `cost`
    result, fake = run("cost", [mid, dear, small, tiny], base)
    assert result.chosen is small
    assert [c.name for c in result.scored] == ["tiny", "small"]
    assert fake.calls[0][0] == "probe · uncompiled"  # one probe pool, then one dev pool per candidate
    assert [len(c) for c in fake.calls] == [5, 1, 1]
    kept, why = obj.decision(result, "cost", 0.03, "tokens")
    assert kept == "compiled" and "small" in why and "60% less" in why and "margin 0.03" in why


def test_cost_keeps_the_uncompiled_program_when_no_cheaper_candidate_is_non_inferior():
    base = uncompiled(ALL_RIGHT, 1000)
    worse = cand("worse", [1.0] * 27 + [0.0] * 3, 500)  # −0.10: its interval's lower bound is below −0.03
    result, _ = run("cost", [worse], base)
    assert result.chosen is None and obj.non_inferior(worse.delta, 0.03) is False
    kept, why = obj.decision(result, "cost", 0.03, "tokens")
    assert kept == "uncompiled" and "kept the uncompiled program" in why
    result, _ = run("cost", [cand("worse", [1.0] * 27 + [0.0] * 3, 500)], base, margin=0.3)  # a wide margin lets it in
    assert result.chosen is not None


def test_probe_drops_candidates_that_behave_like_one_already_seen():
    base = uncompiled(ALL_RIGHT, 1000)
    a = cand("hops=1 chars=300", ALL_RIGHT, 400, outputs="same")
    b = cand("hops=1 chars=150", ALL_RIGHT, 400, outputs="same")  # the setting made irrelevant by hops=1
    like_base = cand("rewrites=1", ALL_RIGHT, 1000, outputs="uncompiled")  # no change at all
    result, _ = run("pareto", [a, b, like_base], base)
    assert [c.name for c in result.probed] == ["hops=1 chars=300"]


def test_pareto_scores_everything_and_keeps_the_non_dominated():
    base = uncompiled([1.0] * 20 + [0.0] * 10, 1000)
    cheap_bad = cand("cheap", [1.0] * 10 + [0.0] * 20, 100)  # on the frontier: nothing is cheaper
    dominated = cand("dominated", [1.0] * 10 + [0.0] * 20, 500)  # as good as `cheap`, dearer
    equal = cand("equal", [1.0] * 20 + [0.0] * 10, 600)  # as good as uncompiled, cheaper: chosen
    best = cand("best", [1.0] * 25 + [0.0] * 5, 1200)  # better and dearer: on the frontier
    result, _ = run("pareto", [best, equal, dominated, cheap_bad], base)
    assert {c.name for c in result.scored} == {"cheap", "dominated", "equal", "best"}
    assert [c.name for c in result.points] == ["cheap", "equal", "best"]  # cheapest first; uncompiled is dominated
    assert result.chosen.name == "equal"
    rows = obj.summary(result, "tokens")
    assert rows[0]["name"] == "uncompiled" and sum(r["chosen"] for r in rows) == 1
    assert {r["name"] for r in rows if r["frontier"]} == {"cheap", "equal", "best"}


def test_space_candidates_leave_out_the_uncompiled_config_and_check_names_and_size():
    built = obj.space_candidates({"hops": [2, 1], "k": [4, 2]}, {"hops": 2, "k": 4, "x": 0}, lambda cfg: cfg, 10)
    assert [c.config for c in built] == [{"k": 2}, {"hops": 1}, {"hops": 1, "k": 2}]
    assert built[2].module == {"hops": 1, "k": 2, "x": 0} and built[2].name == "hops=1 k=2"
    with pytest.raises(DspycError, match="nope"):
        obj.space_candidates({"nope": [1]}, {"hops": 2}, dict, 10)
    with pytest.raises(DspycError, match="max_candidates=2"):
        obj.space_candidates({"hops": [2, 1], "k": [4, 2]}, {"hops": 2, "k": 4}, dict, 2)


def test_run_cost_by_measure():
    cost = ev([1.0], 900).cost | {"output_tokens_per_run": 100.0}
    assert obj.run_cost(cost, "tokens", 0.1) == 1000
    assert obj.run_cost(cost, "prompt_tokens", 0.1) == 900
    assert obj.run_cost(cost, "latency", 0.1) == 9.0
    assert obj.run_cost(cost, "usd", 0.36) == pytest.approx(0.09)  # 0.9 machine-s a run at $0.36/h, per 1k runs
    assert obj.run_cost({}, "tokens", 0.1) is None


def test_call_costs_measure_each_run_cache_hits_included():
    """Tokens per run count a cached call's usage (DSPy keeps it); per-call figures and run latency leave it out."""
    costs = CallCosts()
    for tokens, cached in ((100, False), (300, True)):

        def one_run(tokens=tokens, cached=cached):
            for i in range(2):  # two LM calls a run; the second run's last answered from the cache
                costs.on_lm_start("id", None, {})
                usage = {"prompt_tokens": tokens, "completion_tokens": 10}
                if not (cached and i == 1):
                    costs.bill(usage)
                costs.seen(usage)  # as dspyc.lm.LM reports every response
                costs.on_lm_end("id", None, None)

        costs.run("job", one_run)
    out = costs.summary("job")
    assert out["runs"] == 2 and out["prompt_tokens_per_run"] == 400 and out["output_tokens_per_run"] == 20
    assert (
        out["lm_calls"] == 4 and out["cached_calls"] == 1 and out["prompt_tokens_per_call"] == 166.7
    )  # (100 + 100 + 300) / 3
    assert out["cached_runs"] == 1 and out["run_p50_s"] >= 0  # the p50 of the one run with no cached call
    assert _cost_cell(out, "tokens_per_run") == "420"


def test_the_lm_hands_every_responses_usage_to_the_listener():
    from dspyc.lm import LM, usage_listener

    seen = []
    lm = LM("openai/unused", api_base="http://127.0.0.1:9/v1", api_key="x")
    with usage_listener(seen.append):
        lm.update_history({"usage": {"prompt_tokens": 7}})
    lm.update_history({"usage": {"prompt_tokens": 9}})  # no listener: nothing reported
    assert seen == [{"prompt_tokens": 7}]


def test_recipes_and_flags_set_the_objective():
    from dspyc import cli
    from dspyc.optimizers import load_recipe, with_objective

    assert cli.OBJECTIVES == get_args(obj.Objective)
    cost = load_recipe("cost")
    assert (cost.objective, cost.margin, cost.cost, cost.optimizes) == ("cost", 0.03, "tokens", False)
    assert load_recipe("pareto").objective == "pareto"
    boot = with_objective(load_recipe("bootstrap"), "cost", 0.05)
    assert (boot.objective, boot.margin, boot.optimizes) == ("cost", 0.05, True)
    with pytest.raises(DspycError, match="margin"):
        with_objective(boot, margin=2.0)
    with pytest.raises(DspycError, match="optimizer must be one of"):
        with_objective(load_recipe("cost"), "quality")  # a quality compile needs an optimizer


def test_compile_with_an_unknown_objective_is_one_line():
    """Refused before anything loads (`main` prints a DspycError as one line)."""
    from typer.testing import CliRunner

    from dspyc.cli import app

    out = CliRunner().invoke(app, ["compile", "rag", "--objective", "cheap"])
    assert isinstance(out.exception, DspycError) and "unknown objective 'cheap'" in str(out.exception)


def test_reoptimize_judges_a_cost_champion_on_cost():
    from dspyc.reoptimize import judge
    from dspyc.settings import Settings

    s = Settings(reoptimize_resamples=2000)
    champ, same_cheaper, worse_cheaper = ev(ALL_RIGHT, 1000), ev(ALL_RIGHT, 500), ev([1.0] * 24 + [0.0] * 6, 500)
    win, why, _ = judge("cost", "tokens", champ, same_cheaper, 0.03, 0.05, s, 0)
    assert win and "cheaper" in why
    assert not judge("cost", "tokens", champ, worse_cheaper, 0.03, 0.05, s, 0)[0]
    assert not judge("cost", "tokens", same_cheaper, champ, 0.03, 0.05, s, 0)[0]  # not cheaper
    assert not judge("quality", "tokens", champ, same_cheaper, 0.02, 0.05, s, 0)[0]  # quality: no gain, no promotion


def test_a_cost_version_becomes_champion_only_cheaper_and_within_the_margin():
    from dspyc.artifacts import DatasetRef, LMRef, Manifest
    from dspyc.tracking import champion_decision

    def manifest(version, dev, tokens, objective="quality"):
        cost = {"dev": {"runs": 30, "prompt_tokens_per_run": tokens, "output_tokens_per_run": 0.0}}
        return Manifest(
            program="rag",
            version=version,
            import_path="programs.rag",
            source_hash="x",
            recipe={"name": objective, "objective": objective, "margin": 0.03, "cost": "tokens"},
            dataset=DatasetRef(name="d", path="d", version="v"),
            lm=LMRef(backend="engine", model="m", served_name="m"),
            seed=0,
            split_ids={"dev": "ids"},
            metrics={"compiled": {"dev": {"metric": dev}}, "cost": {"compiled": cost}},
        )

    champion = manifest(1, 0.50, 1000)
    assert champion_decision(manifest(2, 0.48, 600, "cost"), champion)[0]
    assert not champion_decision(manifest(3, 0.45, 600, "cost"), champion)[0]  # worse by more than the margin
    assert not champion_decision(manifest(4, 0.55, 1200, "cost"), champion)[0]  # not cheaper
    assert not champion_decision(manifest(5, 0.48, 600), champion)[0]  # quality: below the champion


def test_frontier_plot_draws_the_candidates(tmp_path):
    from dspyc import plots
    from dspyc.artifacts import DatasetRef, LMRef, Manifest

    base = uncompiled([1.0] * 20 + [0.0] * 10, 1000)
    result, _ = run("pareto", [cand("cheap", [1.0] * 19 + [0.0] * 11, 300), cand("dear", ALL_RIGHT, 1500)], base)
    m = Manifest(
        program="rag",
        version=1,
        import_path="programs.rag",
        source_hash="x",
        recipe={},
        seed=0,
        dataset=DatasetRef(name="d", path="d", version="v"),
        lm=LMRef(backend="engine", model="m", served_name="m"),
        metrics={
            "objective": {"objective": "pareto", "margin": 0.03, "cost": "tokens"},
            "candidates": obj.summary(result, "tokens"),
        },
    )
    out = plots.frontier_plot(m, tmp_path / "f.png")
    assert out is not None and out.stat().st_size > 5000


@pytest.mark.parametrize("name", ["rag", "agent", "tone"])
def test_every_shipped_cost_space_names_settings_of_the_program_config(name):
    """rag declared `query_passage_chars`, which its config lacked: the compile refused only after its baseline."""
    from dspyc import registry
    from dspyc.settings import Settings

    spec = registry.get(name)
    assert obj.space_changes(spec.cost_space, spec.config, Settings().cost_max_candidates)


def test_runs_answered_from_the_cache_have_no_latency_and_say_so():
    from dspyc.compiler import _run_p50

    cached = {"runs": 3, "prompt_tokens_per_run": 10.0, "output_tokens_per_run": 1.0, "cached_runs": 3}
    assert _run_p50(cached) == "cached" and obj.run_cost(cached, "latency", 0.1) is None
    assert obj.run_cost(cached, "tokens", 0.1) == 11.0  # tokens are known from the cache
    assert _run_p50(cached | {"run_p50_s": 1.5}) == "1.50" and _run_p50({}) == "–"


def test_recorded_usage_reads_a_cached_responses_own_usage():
    """DSPy empties a cache hit's `usage` but keeps the response's: a cost compile re-run from the cache measures it."""
    from types import SimpleNamespace

    from dspyc.lm import recorded_usage

    assert recorded_usage({"usage": {"prompt_tokens": 5}}) == {"prompt_tokens": 5}
    assert recorded_usage({"usage": {}, "response": SimpleNamespace()}) == {}
    fields = dict(
        input_tokens=40,
        output_tokens=2,
        total_tokens=42,
        cache_read_tokens=None,
        cache_write_tokens=None,
        reasoning_tokens=None,
        input_audio_tokens=None,
        output_audio_tokens=None,
    )
    cached = SimpleNamespace(usage=SimpleNamespace(**fields))
    out = recorded_usage({"usage": {}, "response": cached})
    assert out["prompt_tokens"] == 40 and out["completion_tokens"] == 2


def test_a_cached_evaluation_still_shows_its_tokens_per_run():
    """rag@1's baseline came from the cache: its table said "cached" though its 1,754 tokens a run were known."""
    cached = {
        "lm_calls": 64,
        "cached_calls": 64,
        "runs": 30,
        "prompt_tokens_per_run": 1733.9,
        "output_tokens_per_run": 20.4,
    }
    assert _cost_cell(cached, "tokens_per_run") == "1,754" and _cost_cell(cached, "latency_p50_s") == "cached"
