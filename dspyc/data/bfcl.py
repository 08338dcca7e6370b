"""The Berkeley Function Calling Leaderboard (BFCL) as dspyc datasets, and its AST checker.

The data ships in the PyPI package `bfcl-eval` (JSON lines under `bfcl_eval/data/`, answers under
`possible_answer/`). Like the default LM, it is provisioned offline-at-runtime: `pip download --no-deps`
of one pinned wheel into the cache, once; the data files are extracted into
`<cache>/bfcl/<version>/` by renaming a finished temporary folder. bfcl-eval itself is never installed
(its dependencies are heavy); the checker below is a port of its Python AST checker
(`bfcl_eval/eval_checker/ast_eval/ast_checker.py`), same rules, same error types.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from dspyc.data import outside as examples_outside
from dspyc.errors import DataError, DspycError
from dspyc.settings import Settings, get_settings
from dspyc.tools.schema import render_function

PACKAGE, VERSION = "bfcl-eval", "2026.3.23"
DATA_PREFIX = "bfcl_eval/data/"
FILE_PREFIX = "BFCL_v4_"
DEFAULT_CATEGORIES = ("simple_python", "multiple", "parallel")
STAMP = ".dspyc-ok"


# --- provisioning ---------------------------------------------------------------------------------


def data_dir(s: Settings | None = None) -> Path:
    """`<cache>/bfcl/<version>/`: the wheel's data folder, extracted once (idempotent, atomic)."""
    from dspyc.models import download_wheel

    s = s or get_settings()
    final = s.cache_dir / "bfcl" / VERSION
    if (final / STAMP).exists():
        return final
    try:
        wheel = download_wheel(PACKAGE, VERSION, s.cache_dir / "wheels")
    except DspycError as exc:
        raise DspycError(
            f"BFCL data is not provisioned and {exc} (needs PyPI once; then it is cached in {final})"
        ) from None
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{VERSION}-") as tmp:
        out = Path(tmp) / "data"
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(DATA_PREFIX) and member.endswith(".json") and "/unused_datasets/" not in member:
                    dest = out / member[len(DATA_PREFIX) :]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, dest.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
        (out / STAMP).write_text(f"{PACKAGE}=={VERSION} from {wheel.name}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)
    return final


def categories(s: Settings | None = None) -> list[str]:
    """Categories that have possible answers (the ones an AST checker can score)."""
    d = data_dir(s)
    return sorted(
        p.stem[len(FILE_PREFIX) :]
        for p in (d / "possible_answer").glob(f"{FILE_PREFIX}*.json")
        if (d / p.name).exists() and _scorable(p.stem[len(FILE_PREFIX) :])
    )


def _scorable(category: str) -> bool:
    # Multi-turn, memory and web-search answers are state/trajectory checks, not single AST calls.
    # Java/JavaScript need BFCL's type converters, which this port leaves out.
    return not category.startswith(("multi_turn", "memory", "web_search", "format", "simple_java"))


# --- loading --------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    return rows


def question_text(question: Any) -> str:
    """BFCL questions are chat turns (`[[{"role", "content"}, ...]]`); the user's words, joined."""
    turns = question[0] if question and isinstance(question[0], list) else question
    return "\n".join(m["content"] for m in turns if isinstance(m, dict) and m.get("role") == "user")


def _canonical(value: Any) -> Any:
    """A dict inside a possible answer holds allowed values per key too (`{"min": [300000]}`): pick the first."""
    if isinstance(value, dict):
        out = {}
        for k, allowed in value.items():
            if isinstance(allowed, list):
                chosen = next((v for v in allowed if v != ""), None)
                if chosen is not None or "" not in allowed:
                    out[k] = _canonical(chosen)
            else:
                out[k] = allowed
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [_canonical(v) for v in value]
    return value


def canonical_calls(ground_truth: list[dict[str, dict[str, list]]]) -> list[dict[str, Any]]:
    """One concrete correct answer: the first allowed value of each argument, optional ones (`""`) left out."""
    return [{"name": name, "arguments": _canonical(params)} for call in ground_truth for name, params in call.items()]


def load_category(category: str, s: Settings | None = None) -> list[dspy.Example]:
    d = data_dir(s)
    qpath, apath = d / f"{FILE_PREFIX}{category}.json", d / "possible_answer" / f"{FILE_PREFIX}{category}.json"
    if not qpath.exists() or not apath.exists() or not _scorable(category):
        raise DataError(
            f"BFCL category {category!r} has no AST-scorable possible answers; choose from {', '.join(categories(s))}"
        )
    answers = {r["id"]: r["ground_truth"] for r in _read_jsonl(apath)}
    out = []
    for row in _read_jsonl(qpath):
        if row["id"] not in answers:
            continue
        gt = answers[row["id"]]
        # `functions`: what the prompt shows (one compact line each); `schemas`: what constrains and checks.
        out.append(
            dspy.Example(
                id=row["id"],
                category=category,
                question=question_text(row["question"]),
                functions=[render_function(f) for f in row["function"]],
                schemas=row["function"],
                possible_answer=gt,
                calls=canonical_calls(gt),
            ).with_inputs("question", "functions", "schemas")
        )
    if not out:
        raise DataError(f"{qpath}: no rows with possible answers")
    return out


def parse_spec(spec: str) -> list[str]:
    """`bfcl` → the default categories; `bfcl:simple_python,parallel` → those."""
    name, _, cats = spec.partition(":")
    if name != "bfcl":
        raise DataError(f"not a BFCL dataset spec: {spec!r} (use bfcl or bfcl:CATEGORY[,CATEGORY])")
    return [c.strip() for c in cats.split(",") if c.strip()] or list(DEFAULT_CATEGORIES)


@dataclass
class BFCLDataset:
    """Several BFCL categories; splits are drawn per category so every category is in every split."""

    name: str
    path: str
    examples: dict[str, list[dspy.Example]]
    version: str
    splits: dict[str, list[dspy.Example]] = field(default_factory=dict)
    split_sizes: tuple[int, int, int] | None = None  # the (train, dev, test) asked for by the last split()

    def split(self, seed: int, train: int, dev: int, test: int) -> dict[str, list[dspy.Example]]:
        """Per category: deterministic train/dev/test from a seed (sizes are per category, capped by the data)."""
        self.splits = {"train": [], "dev": [], "test": [], "all": []}
        self.split_sizes = (train, dev, test)
        per_category_train = []
        for cat, rows in self.examples.items():
            order = sorted(rows, key=lambda ex: ex.id)
            random.Random(f"{seed}:{cat}").shuffle(order)
            n = len(order)
            n_train = min(train, n // 3)
            n_dev = min(dev, (n - n_train) // 2)
            per_category_train.append(order[:n_train])
            self.splits["dev"] += order[n_train : n_train + n_dev]
            self.splits["test"] += order[n_train + n_dev : n_train + n_dev + test]
            self.splits["all"] += order
        # Train interleaves the categories: Bootstrap* optimizers take the first passing traces in train order,
        # and category by category all three demos were simple_python ones.
        self.splits["train"] = _interleave(per_category_train)
        return self.splits

    def outside(self, *splits: str) -> list[dspy.Example]:
        """Every example in none of `splits`, the categories interleaved (e.g. more gold labels for distillation:
        all but train, dev and test)."""
        rest = examples_outside(self.splits, *splits)
        return _interleave([[ex for ex in rest if ex.category == cat] for cat in self.examples])


def _interleave(groups: list[list[dspy.Example]]) -> list[dspy.Example]:
    return [ex for group in itertools.zip_longest(*groups) for ex in group if ex is not None]


def load_bfcl(spec: str = "bfcl", s: Settings | None = None) -> BFCLDataset:
    cats = parse_spec(spec)
    examples = {c: load_category(c, s) for c in cats}
    d = data_dir(s)
    h = hashlib.sha256(VERSION.encode())
    for c in cats:
        for p in (d / f"{FILE_PREFIX}{c}.json", d / "possible_answer" / f"{FILE_PREFIX}{c}.json"):
            h.update(p.read_bytes())
    return BFCLDataset(
        name=f"bfcl:{','.join(cats)}", path=f"{PACKAGE}=={VERSION}", examples=examples, version=h.hexdigest()[:16]
    )


# --- the AST checker (port of BFCL's Python checker) ----------------------------------------------

PYTHON_TYPE_MAPPING = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
PYTHON_NESTED_TYPE_CHECK_LIST = ["array", "tuple"]


@dataclass
class CheckResult:
    valid: bool
    error: list[Any] = field(default_factory=list)
    error_type: str = ""

    def __bool__(self) -> bool:
        return self.valid


def _ok() -> CheckResult:
    return CheckResult(True)


def _bad(error_type: str, msg: Any) -> CheckResult:
    return CheckResult(False, [msg], error_type)


def standardize_string(s: str) -> str:
    """BFCL's normalization: drop spaces and `,./-_*^`, lowercase, single quotes → double."""
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", s).lower().replace("'", '"')


def _possible_type(possible: list) -> type | None:
    for a in possible:
        if a != "":
            return type(a)
    return None


def _type_checker(
    param: str, value: Any, possible: list, expected_desc: str, expected: type, nested: type | None
) -> tuple[CheckResult, bool]:
    """(result, is_variable): BFCL accepts a value typed like the possible answer (a variable name) too."""
    ptype = _possible_type(possible)
    is_variable = ptype is not None and ptype != expected
    if type(value) is expected:
        if nested is None:
            return _ok(), is_variable
        for item in possible:
            flag = True
            if type(item) is list:
                for v in value:
                    r, _ = _type_checker(param, v, item, str(nested), nested, None)
                    if not r.valid:
                        flag = False
                        break
            if flag:
                return _ok(), is_variable
        return _bad(
            "type_error:nested",
            f"Nested type checking failed for parameter {param!r}. Expected outer type "
            f"{expected_desc} with inner type {nested}. Parameter value: {value!r}.",
        ), False
    if ptype is not None and type(value) is ptype:
        return _ok(), True
    return _bad(
        "type_error:simple",
        f"Incorrect type for parameter {param!r}. Expected type {expected_desc}, got "
        f"{type(value).__name__}. Parameter value: {value!r}.",
    ), False


def _string_checker(param: str, value: str, possible: list) -> CheckResult:
    if standardize_string(value) not in [standardize_string(a) for a in possible if type(a) is str]:
        return _bad(
            "value_error:string",
            f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible}. Case insensitive.",
        )
    return _ok()


def _list_checker(param: str, value: list, possible: list) -> CheckResult:
    std = [standardize_string(v) if type(v) is str else v for v in value]
    std_possible = [
        [standardize_string(x) if type(x) is str else x for x in p] for p in possible if isinstance(p, list)
    ]
    if std not in std_possible:
        return _bad(
            "value_error:list/tuple", f"Invalid value for parameter {param!r}: {value!r}. Expected one of {possible}."
        )
    return _ok()


def _dict_checker(param: str, value: dict, possibles: list) -> CheckResult:
    result = _bad("dict_checker:unclear", "no matching dict")
    for possible in possibles:
        if possible == "":
            continue
        flag = True
        for k, v in value.items():
            if k not in possible:
                result, flag = _bad("value_error:dict_key", f"Unexpected dict key parameter: '{k}'."), False
                break
            sv = standardize_string(v) if type(v) is str else v
            allowed = [standardize_string(a) if type(a) is str else a for a in possible[k]]
            if sv not in allowed:
                result, flag = (
                    _bad(
                        "value_error:dict_value",
                        f"Invalid value for parameter {k!r}: {v!r}. Expected one of {allowed}.",
                    ),
                    False,
                )
                break
        if flag:
            for k, allowed in possible.items():
                if k not in value and "" not in allowed:
                    result, flag = _bad("value_error:dict_key", f"Missing dict key parameter: '{k}'."), False
                    break
        if flag:
            return _ok()
    return result


def _list_dict_checker(param: str, value: list, possibles: list) -> CheckResult:
    result = _bad("list_dict_checker:unclear", "no matching list of dicts")
    for possible in possibles:
        if not isinstance(possible, list) or len(value) != len(possible):
            result = _bad("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        flag = True
        for v, p in zip(value, possible, strict=True):
            result = _dict_checker(param, v, [p])
            if not result.valid:
                flag = False
                break
        if flag:
            return _ok()
    return result


def simple_function_checker(
    func: dict[str, Any], call: dict[str, dict[str, Any]], answer: dict[str, dict[str, list]]
) -> CheckResult:
    """One call `{name: {arg: value}}` against one possible answer `{name: {arg: [allowed, ...]}}`."""
    possible = next(iter(answer.values()))
    name = func["name"]
    details = func["parameters"]["properties"]
    required = func["parameters"].get("required", [])
    if name not in call:
        return _bad("simple_function_checker:wrong_func_name", f"Function name {name!r} not found in model output.")
    params = call[name]
    for p in required:
        if p not in params:
            return _bad("simple_function_checker:missing_required", f"Missing required parameter: {p!r}.")
    for p, value in params.items():
        if p not in details or p not in possible:
            return _bad("simple_function_checker:unexpected_param", f"Unexpected parameter: {p!r}.")
        desc = details[p]["type"]
        expected = PYTHON_TYPE_MAPPING[desc]
        nested = PYTHON_TYPE_MAPPING[details[p]["items"]["type"]] if desc in PYTHON_NESTED_TYPE_CHECK_LIST else None
        if desc == "tuple" and type(value) is tuple:
            value = list(value)
        if desc == "float" and type(value) is int:  # Python's int → float promotion
            value = float(value)
        r, is_variable = _type_checker(p, value, possible[p], desc, expected, nested)
        if not r.valid:
            return r
        if not is_variable:
            if expected is dict:
                r = _dict_checker(p, value, possible[p])
            elif expected is list and nested is dict:
                r = _list_dict_checker(p, value, possible[p])
            elif expected is str:
                r = _string_checker(p, value, possible[p])
            elif expected is list:
                r = _list_checker(p, value, possible[p])
            else:
                r = None
            if r is not None:
                if not r.valid:
                    return r
                continue
        if value not in possible[p]:
            return _bad(
                "value_error:others", f"Invalid value for parameter {p!r}: {value!r}. Expected one of {possible[p]}."
            )
    for p in possible:
        if p not in params and "" not in possible[p]:
            return _bad(
                "simple_function_checker:missing_optional",
                f"Optional parameter {p!r} not provided and not marked as optional.",
            )
    return _ok()


def _find(funcs: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((f for f in funcs if f["name"] == name), None)


def ast_check(
    functions: list[dict[str, Any]], calls: list[dict[str, dict[str, Any]]], possible_answer: list[dict], category: str
) -> CheckResult:
    """BFCL's `ast_checker` for Python: `calls` is the model's output as `[{name: {arg: value}}, ...]`."""
    if len(calls) != len(possible_answer):
        kind = (
            "parallel_function_checker_no_order"
            if "parallel" in category
            else ("multiple_function_checker" if "multiple" in category else "simple_function_checker")
        )
        return _bad(f"{kind}:wrong_count", "Wrong number of functions.")
    if "parallel" in category:
        matched: list[int] = []
        for i, answer in enumerate(possible_answer):
            func = _find(functions, next(iter(answer)))
            if func is None:
                return _bad("parallel_function_checker_no_order:cannot_find_match", f"no function for answer {i}")
            result = _bad("parallel_function_checker_no_order:cannot_find_match", f"no output left for answer {i}")
            for j, call in enumerate(calls):
                if j in matched:
                    continue
                result = simple_function_checker(func, call, answer)
                if result.valid:
                    matched.append(j)
                    break
            if not result.valid:
                return _bad(
                    "parallel_function_checker_no_order:cannot_find_match",
                    f"Could not find a matching function for index {i} of possible answers.",
                )
        return _ok()
    func = _find(functions, next(iter(possible_answer[0]))) if "multiple" in category else functions[0]
    if func is None:
        return _bad("multiple_function_checker:no_description", "expected function not among the descriptions")
    return simple_function_checker(func, calls[0], possible_answer[0])


def to_bfcl_calls(calls: list[Any]) -> list[dict[str, dict[str, Any]]]:
    """`[{"name", "arguments"}]` (or pydantic models of that shape) → BFCL's `[{name: {arg: value}}]`."""
    out = []
    for c in calls or []:
        c = c.model_dump() if hasattr(c, "model_dump") else dict(c)
        out.append({c.get("name", ""): dict(c.get("arguments") or {})})
    return out
