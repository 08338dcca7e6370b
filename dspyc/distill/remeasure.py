"""`dspyc distill-table tone@1 tone@2`: a distillation's table again, for students already stored.

The teacher, each student and the untuned base are scored on the held-out split through the engines as they
run now (after an engine fix, on another machine), exactly as `dspyc distill` scores them at its end. Nothing
is trained; the table is printed and logged to MLflow like a distillation's.
"""

from __future__ import annotations

import re
from typing import Any

from dspyc import artifacts, loading, registry
from dspyc.distill import student as S
from dspyc.distill.pipeline import _labels, _teacher, evaluate_system, report_table
from dspyc.errors import DspycError
from dspyc.lm import build_lm
from dspyc.settings import Settings, get_settings


def remeasure(
    refs: list[str], split: str = "test", eval_threads: int = 2, track: bool = True, s: Settings | None = None
) -> dict[str, Any]:
    """Score the students `refs` (versions of one program, distilled from one teacher), their teacher on the
    program LM and the untuned base; returns {"systems": ..., "rows": ...}."""
    s = s or get_settings()
    for ref in refs:  # every ref a student before anything is built (a one-line error, not minutes of loading)
        name, tag = artifacts.parse_ref(ref)
        S.student_info(artifacts.read_manifest(name, loading.resolve_version(name, tag, s), s))
    students = []
    for ref in refs:
        module, manifest, dataset = loading.build_version(ref, s=s)
        students.append((module, manifest, dataset, S.student_info(manifest)))
    programs = {m.program for _, m, _, _ in students}
    teachers = {info.get("teacher") for *_, info in students}
    if len(programs) != 1 or len(teachers) != 1:
        raise DspycError(
            f"{' '.join(refs)}: give students of one program and one teacher "
            f"(programs {sorted(programs)}, teachers {sorted(map(str, teachers))})"
        )
    module0, manifest0, dataset, info0 = students[0]
    spec = registry.get(manifest0.program)
    teacher_label = str(info0.get("teacher"))
    # "agent@3" was a compiled version; "tone (uncompiled, default config)" the program as built
    teacher_ref = teacher_label if re.fullmatch(r"[\w-]+@\d+", teacher_label) else None
    teacher_module, _ = _teacher(spec, dataset, teacher_ref, s)
    held_out = dataset.splits.get(split) or []
    if not held_out:
        raise DspycError(f"{manifest0.program}'s dataset has no {split!r} examples")
    teacher_lm = build_lm(s, temperature=0.0)
    systems = {
        "teacher": evaluate_system(f"teacher · {split}", teacher_module, teacher_lm, held_out, spec, eval_threads, s)
    }
    versions: dict[str, int] = {}
    for module, manifest, _, info in students:
        lm = S.student_lm(manifest, s, temperature=0.0)
        systems[f"student_{info.get('stage', manifest.version)}"] = evaluate_system(
            f"{manifest.program}@{manifest.version} · {split}", module, lm, held_out, spec, eval_threads, s
        )
        versions[str(info.get("stage"))] = manifest.version
    base = S.base_model(manifest0)
    systems["student_base"] = evaluate_system(
        f"untuned base · {split}", module0, build_lm(s, model=base, temperature=0.0), held_out, spec, eval_threads, s
    )
    rows = report_table(
        manifest0.program,
        systems,
        _labels(teacher_label, teacher_lm.model, base),
        split,
        len(held_out),
        versions,
        track,
        s,
    )
    return {"systems": systems, "rows": rows}
