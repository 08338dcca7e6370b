"""Champion/challenger re-optimization: when a program's data (or code) changed since its champion was
compiled, compile a challenger with the champion's recipe, score both on the same fresh held-out examples,
and promote only on a significant win. One lock per program; the promotion is a single alias move at the
very end, so a crash at any point leaves the champion as it was and the next tick starts over.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

from dspyc import artifacts, loading, registry, tracking
from dspyc.console import console as make_console
from dspyc.data import apply_split_config
from dspyc.errors import DspycError
from dspyc.settings import Settings, get_settings
from dspyc.stats import paired_bootstrap

console = make_console()
DECISIONS = "decisions.jsonl"


class Decision(BaseModel):
    program: str
    action: str  # "promoted", "kept" (challenger not better enough), "skipped" (nothing changed)
    reason: str
    champion: int
    challenger: int | None = None
    dataset_before: str = ""
    dataset_after: str = ""
    n: int = 0  # held-out examples both were scored on
    champion_score: float | None = None
    challenger_score: float | None = None
    delta: float | None = None
    ci95: tuple[float, float] | None = None
    p_value: float | None = None
    margin: float = 0.0
    alpha: float = 0.05
    created: str = ""


@contextmanager
def program_lock(program: str, s: Settings) -> Iterator[None]:
    """At most one re-optimization per program; the OS drops the lock if the holder dies."""
    d = artifacts.program_dir(program, s)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".reoptimize.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise DspycError(
                f"another re-optimization of {program} is running ({f.read().strip() or 'pid unknown'})"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {artifacts.now_iso()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _decided(program: str, champion: int, dataset: str, source: str, s: Settings) -> Decision | None:
    """A challenger was already judged against this champion on this data and code: don't compile it again."""
    f = artifacts.program_dir(program, s) / DECISIONS
    for line in reversed(f.read_text().splitlines() if f.exists() else []):
        row = json.loads(line)
        if (row["champion"], row["dataset_after"], row.get("source_hash")) == (champion, dataset, source) and row[
            "action"
        ] != "skipped":
            return Decision(**{k: v for k, v in row.items() if k in Decision.model_fields})
    return None


def _record(d: Decision, source_hash: str, s: Settings) -> None:
    with open(artifacts.program_dir(d.program, s) / DECISIONS, "a") as f:  # one short line per append
        f.write(json.dumps(d.model_dump() | {"source_hash": source_hash}) + "\n")
    try:
        metrics = {
            k: float(v) for k, v in d.model_dump().items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        tracking.log_run(
            d.program,
            "reoptimize",
            f"reoptimize {d.program}: {d.action}",
            {
                "action": d.action,
                "reason": d.reason,
                "champion": d.champion,
                "challenger": d.challenger,
                "dataset_before": d.dataset_before,
                "dataset_after": d.dataset_after,
            },
            metrics,
            s,
            tags={"dspyc.decision": d.action},
        )
    except Exception as exc:
        console.print(
            f"[yellow]tracking skipped[/yellow] for the decision ({type(exc).__name__}); it is in {DECISIONS}"
        )


def _evaluate(ref: str, examples: list, spec: registry.ProgramSpec, data: str, s: Settings, measure: bool):
    """`ref` on the held-out examples; `measure`: with DSPy's cache off, so its cost per run is measured."""
    from dspyc.compiler import evaluate, measured

    module, _, _ = loading.build_version(ref, data=data, s=s)
    with measured(measure):
        return evaluate(module, examples, spec, s.num_threads, f"{ref} · held-out")


def judge(
    objective: str, cost_measure: str, champ, chal, margin: float, alpha: float, s: Settings, seed: int
) -> tuple[bool, str, tuple[float, tuple[float, float], float]]:
    """(promote?, why, (delta, ci, p)) for challenger vs champion on the same held-out examples. `quality`: a win
    by `margin` with p < alpha; `cost`, `pareto`: not worse by more than `margin` (the interval's lower bound) and
    cheaper per run."""
    from dspyc.objective import COST_LABELS, run_cost

    delta, ci, p = paired_bootstrap(chal.per_example, champ.per_example, s.reoptimize_resamples, seed=seed)
    stats = f"95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}], p={p:.4f}, n={len(chal.per_example)}"
    if objective == "quality":
        win = delta >= margin and p < alpha
        return (
            win,
            (
                f"challenger {'beats' if win else 'does not beat'} champion by {delta:+.3f} "
                f"(margin {margin}, {stats}, alpha {alpha})"
            ),
            (delta, ci, p),
        )
    before, after = (run_cost(e.cost, cost_measure, s.price_machine_hour) for e in (champ, chal))
    cheaper = before is not None and after is not None and after < before
    win = ci[0] >= -margin and cheaper
    return (
        win,
        (
            f"objective {objective}: challenger is {'' if ci[0] >= -margin else 'not '}within {margin:g} of the "
            f"champion ({delta:+.3f}, {stats}) at {after} vs {before} {COST_LABELS[cost_measure]} "
            f"({'cheaper' if cheaper else 'not cheaper'})"
        ),
        (delta, ci, p),
    )


def reoptimize(
    program: str,
    s: Settings | None = None,
    *,
    margin: float | None = None,
    alpha: float | None = None,
    force: bool = False,
    warm_start: bool = False,
) -> Decision:
    from dspyc.compiler import compile_program
    from dspyc.lm import configure

    s = s or get_settings()
    explicit_margin, margin = margin, s.reoptimize_margin if margin is None else margin
    alpha = s.reoptimize_alpha if alpha is None else alpha
    spec = registry.get(program)
    with program_lock(program, s):
        champion = tracking.resolve_alias(program, tracking.CHAMPION, s)
        champ = artifacts.read_manifest(program, champion, s)
        # the champion's objective and margin: a cost champion is challenged on cost, and promoted on it
        objective, cost_measure = champ.recipe.get("objective", "quality"), champ.recipe.get("cost", "tokens")
        if objective != "quality" and explicit_margin is None:
            margin = champ.recipe.get("margin", margin)
        data = champ.dataset.path if Path(champ.dataset.path).is_dir() else champ.dataset.name
        current = spec.load_data(data, champ.seed)
        apply_split_config(
            current, spec.config | champ.config, champ.seed
        )  # the champion's split sizes (--set test=60)
        source = registry.source_hash(program)
        base = dict(
            program=program,
            champion=champion,
            dataset_before=champ.dataset.version,
            dataset_after=current.version,
            margin=margin,
            alpha=alpha,
            created=artifacts.now_iso(),
        )
        changed = [
            what
            for what, differs in (
                ("data", current.version != champ.dataset.version),
                ("code", source != champ.source_hash),
            )
            if differs
        ]
        if not changed and not force:
            d = Decision(
                action="skipped",
                reason=f"data ({current.version}) and code unchanged since {program}@{champion}",
                **base,
            )
            console.print(f"[dim]{program}: {d.reason}; champion stays[/dim]")
            return d
        earlier = None if force else _decided(program, champion, current.version, source, s)
        if earlier:
            console.print(
                f"[dim]{program}: already decided for this data and code ({earlier.action}: {earlier.reason})[/dim]"
            )
            return earlier.model_copy(update={"action": "skipped", "reason": f"already decided: {earlier.reason}"})
        console.print(
            f"[bold]{program}[/bold]: {' and '.join(changed) or 'forced'} changed since champion "
            f"{program}@{champion}; compiling a challenger with recipe {champ.recipe.get('name')}"
        )
        warm = artifacts.program_dir(program, s) / str(champion) / artifacts.PROGRAM_FILE if warm_start else None
        chal = compile_program(
            program,
            champ.recipe.get("name"),
            data=data,
            seed=champ.seed,
            s=s,
            config=champ.config,
            warm_start=warm,
            auto_champion=False,  # only the held-out test below promotes
            objective=objective,
            margin=margin if objective != "quality" else None,
        )
        # The same fresh held-out examples for both: the current test split, minus anything either trained on.
        used = set(champ.trained_on) | set(chal.trained_on)
        held_out = [ex for ex in current.splits["test"] if str(ex.get("id")) not in used]
        if not held_out:
            raise DspycError(f"{program}: no held-out examples left to compare on (all were used for training)")
        configure(s)
        cost_run = objective != "quality"
        champ_ev = _evaluate(f"{program}@{champion}", held_out, spec, data, s, cost_run)
        chal_ev = _evaluate(f"{program}@{chal.version}", held_out, spec, data, s, cost_run)
        champ_scores, chal_scores = champ_ev.per_example, chal_ev.per_example
        win, reason, (delta, ci, p) = judge(objective, cost_measure, champ_ev, chal_ev, margin, alpha, s, champ.seed)
        d = Decision(
            action="promoted" if win else "kept",
            reason=reason,
            challenger=chal.version,
            n=len(held_out),
            champion_score=sum(champ_scores) / len(champ_scores),
            challenger_score=sum(chal_scores) / len(chal_scores),
            delta=delta,
            ci95=ci,
            p_value=p,
            **base,
        )
        if win:
            tracking.promote(program, chal.version, s, reason=f"reoptimize: {reason}")
        _record(d, source, s)
        colour = "green" if win else "yellow"
        console.print(
            f"[{colour}]{program}: {d.action}[/{colour}] {program}@{chal.version if win else champion} "
            f"is champion · {reason}"
        )
        return d


def schedule(programs: list[str], cron: str, s: Settings | None = None, run_now: bool = False) -> None:
    """Run `reoptimize` for each program on a cron expression, in process (APScheduler); a failed tick is
    logged and retried at the next one."""
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    s = s or get_settings()
    try:
        trigger = CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise DspycError(f"bad cron expression {cron!r}: {exc}") from None

    def tick() -> None:
        for program in programs:
            try:
                reoptimize(program, s)
            except Exception as exc:  # noqa: BLE001 - one program's failure must not stop the schedule
                console.print(
                    f"[red]{program}: re-optimization failed[/red] ({type(exc).__name__}: {exc}); retrying next tick"
                )

    scheduler = BlockingScheduler()
    scheduler.add_job(tick, trigger, max_instances=1, coalesce=True)
    console.print(
        f"re-optimizing {', '.join(programs)} on '{cron}' (next: {trigger.get_next_fire_time(None, _now())}); Ctrl-C stops"
    )
    if run_now:
        tick()
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


def _now():
    from datetime import datetime

    return datetime.now().astimezone()


def crontab_line(programs: list[str], cron: str, s: Settings | None = None) -> str:
    """The same schedule as a crontab line, for hosts where cron, not a long-running process, should own it."""
    s = s or get_settings()
    log = s.artifacts_dir / "reoptimize.log"
    cmds = " && ".join(f"{s.project_dir}/.venv/bin/dspyc reoptimize {p}" for p in programs)
    return f"{cron} cd {s.project_dir} && {cmds} >> {log} 2>&1"
