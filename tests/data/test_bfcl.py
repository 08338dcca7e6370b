"""The AST checker against BFCL's own possible answers (the real data from the bfcl-eval wheel)."""

import copy

import pytest

from dspyc.data import bfcl
from dspyc.errors import DataError, DspycError


@pytest.fixture(scope="module")
def data():
    try:
        return {c: bfcl.load_category(c) for c in bfcl.DEFAULT_CATEGORIES}
    except DspycError as exc:  # first use needs PyPI once; afterwards the cache serves it
        pytest.skip(f"BFCL data not provisioned: {exc}")


def _check(ex, calls):
    return bfcl.ast_check(ex.schemas, bfcl.to_bfcl_calls(calls), ex.possible_answer, ex.category)


def test_every_canonical_answer_passes(data):
    for cat, rows in data.items():
        assert len(rows) >= 200
        failures = [ex.id for ex in rows if not _check(ex, ex.calls)]
        assert failures == [], cat


def test_every_allowed_alternative_value_passes(data):
    """Swap in each other allowed value of each argument (BFCL's possible answers list them all)."""
    checked = 0
    for ex in data["simple_python"][:150]:
        ((name, params),) = ex.possible_answer[0].items()
        required = ex.schemas[0]["parameters"].get("required", [])
        for arg, allowed in params.items():
            for value in allowed[1:]:
                call = copy.deepcopy(ex.calls[0])
                if value == "" and arg in required:
                    continue  # a few answers mark a required argument optional; BFCL's checker fails those too
                if value == "":
                    call["arguments"].pop(arg, None)
                elif not isinstance(value, dict | list):
                    call["arguments"][arg] = value
                else:
                    continue
                assert _check(ex, [call]), (ex.id, arg, value)
                checked += 1
    assert checked > 50


def _simple(data, i=0):
    return data["simple_python"][i]


def test_wrong_name_missing_required_unexpected_and_wrong_value(data):
    ex = _simple(data)  # calculate_triangle_area(base=10, height=5, unit optional)
    good = ex.calls[0]
    assert _check(ex, [good])
    r = _check(ex, [{"name": "calculate_circle_area", "arguments": good["arguments"]}])
    assert r.error_type == "simple_function_checker:wrong_func_name"
    r = _check(ex, [{"name": good["name"], "arguments": {"base": 10}}])
    assert r.error_type == "simple_function_checker:missing_required"
    r = _check(ex, [{"name": good["name"], "arguments": {**good["arguments"], "color": "red"}}])
    assert r.error_type == "simple_function_checker:unexpected_param"
    r = _check(ex, [{"name": good["name"], "arguments": {**good["arguments"], "base": 11}}])
    assert r.error_type == "value_error:others"
    r = _check(ex, [{"name": good["name"], "arguments": {**good["arguments"], "base": "10"}}])
    assert r.error_type == "type_error:simple"
    assert _check(ex, [good, good]).error_type == "simple_function_checker:wrong_count"
    assert not _check(ex, [])


def test_strings_are_normalized_like_bfcl():
    func = {"name": "f", "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"]}}
    answer = [{"f": {"city": ["New York, NY"]}}]
    assert bfcl.ast_check([func], [{"f": {"city": "new york ny"}}], answer, "simple_python")
    assert not bfcl.ast_check([func], [{"f": {"city": "Boston"}}], answer, "simple_python")
    assert bfcl.standardize_string("April 1, 2024") == bfcl.standardize_string("april 1 2024")


def test_int_promotes_to_float_but_not_the_reverse():
    func = {
        "name": "f",
        "parameters": {"properties": {"x": {"type": "float"}, "n": {"type": "integer"}}, "required": ["x", "n"]},
    }
    answer = [{"f": {"x": [5.0], "n": [2]}}]
    assert bfcl.ast_check([func], [{"f": {"x": 5, "n": 2}}], answer, "simple_python")
    assert not bfcl.ast_check([func], [{"f": {"x": 5.0, "n": 2.0}}], answer, "simple_python")


def test_parallel_ignores_order_and_needs_every_call(data):
    ex = next(e for e in data["parallel"] if len(e.calls) >= 2 and e.calls[0] != e.calls[1])
    assert _check(ex, ex.calls) and _check(ex, list(reversed(ex.calls)))
    assert _check(ex, ex.calls[:-1]).error_type.endswith("wrong_count")
    assert not _check(ex, [ex.calls[0]] * len(ex.calls))


def test_multiple_picks_the_expected_function_among_several(data):
    ex = next(e for e in data["multiple"] if len(e.schemas) >= 2)
    assert _check(ex, ex.calls)
    other = next(f["name"] for f in ex.schemas if f["name"] != ex.calls[0]["name"])
    assert not _check(ex, [{"name": other, "arguments": ex.calls[0]["arguments"]}])


def test_nested_dict_values_are_checked_per_key(data):
    ex = next(e for e in data["multiple"] if e.id == "multiple_8")  # budget: {"min": [...], "max": [...]}
    assert _check(ex, ex.calls)
    bad = copy.deepcopy(ex.calls)
    bad[0]["arguments"]["budget"]["min"] += 1
    assert _check(ex, bad).error_type == "value_error:dict_value"


def test_specs_splits_and_errors(data):
    assert bfcl.parse_spec("bfcl") == list(bfcl.DEFAULT_CATEGORIES)
    assert bfcl.parse_spec("bfcl:parallel, multiple") == ["parallel", "multiple"]
    with pytest.raises(DataError):
        bfcl.parse_spec("wiki")
    with pytest.raises(DataError, match="simple_python"):
        bfcl.load_category("multi_turn_base")
    ds = bfcl.load_bfcl("bfcl:simple_python,parallel")
    splits = ds.split(0, 3, 2, 4)
    assert {k: len(v) for k, v in splits.items() if k != "all"} == {"train": 6, "dev": 4, "test": 8}
    ids = [ex.id for k in ("train", "dev", "test") for ex in splits[k]]
    assert len(ids) == len(set(ids))  # held out: no item in two splits
    assert [ex.id for ex in ds.split(0, 3, 2, 4)["test"]] == [ex.id for ex in splits["test"]]
    assert {ex.category for ex in splits["test"]} == {"simple_python", "parallel"}
    # train alternates categories, so the first passing traces a bootstrap takes are not all of one kind
    assert [ex.category for ex in splits["train"]] == ["simple_python", "parallel"] * 3
    assert "live_simple" in bfcl.categories() and "simple_java" not in bfcl.categories()
