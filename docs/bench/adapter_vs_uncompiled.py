"""A trained adapter (kept or not) against the uncompiled program on any data, paired, with a 95% interval.

    python docs/bench/adapter_vs_uncompiled.py agent ~/.cache/dspyc/finetune/agent/HASH/adapter \\
        bfcl:live_simple,live_multiple,parallel_multiple,live_parallel --split test

The compiled side is the program under its spec's `finetune_config` with the adapter served as `dspyc eval` serves
one; a compile that did not keep its adapter leaves it in the finetune cache, so it can still be scored elsewhere.
Where the spec has a `finetune_config`, the same program under it without the adapter is scored too: what the
weights add apart from the rewiring. `--set KEY=VAL` (a YAML value, repeatable) changes that config on both sides,
e.g. `--set one_task_calls=several`: the adapter served under a config it was not trained under; `--set train=110`
splits the data as a compile run with it did, so its test questions are not the adapter's train questions.
"""

import argparse
from pathlib import Path

from dspyc import registry
from dspyc.cli import parse_overrides
from dspyc.artifacts import AdapterRef
from dspyc.compiler import build_uncompiled, configure, evaluate_many
from dspyc.distill import student as S
from dspyc.settings import get_settings
from dspyc.stats import format_delta, paired_delta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("program")
    ap.add_argument("adapter", type=Path)
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VAL")
    args = ap.parse_args()
    s = get_settings()
    configure(s)
    spec = registry.get(args.program)
    overrides = parse_overrides(args.set)  # also the split (`--set train=110`: score the compile's own test split)
    served = dict(spec.finetune_config or {}) | overrides
    base, dataset, _ = build_uncompiled(args.program, args.data, config=overrides)
    compiled = build_uncompiled(args.program, config=served, dataset=dataset)[0]
    ref = AdapterRef(lora_name=S.lora_name(args.program, args.adapter, role="ft"), base_model=s.lm_model)
    compiled.set_lm(S.adapter_lm(s, args.adapter, ref))
    examples = dataset.splits[args.split]
    systems = [("compiled", compiled), ("uncompiled", base)]
    if spec.finetune_config:
        untrained = build_uncompiled(args.program, config=served, dataset=dataset)[0]
        systems.append((f"uncompiled under {served}", untrained))
    evs = evaluate_many([(label, m, examples) for label, m in systems], spec, s.num_threads)
    for (label, _), ev in zip(systems, evs):
        print(label, {k: round(v, 3) for k, v in ev.scores.items()})
    for (label, _), ev in zip(systems[1:], evs[1:]):
        delta = paired_delta(evs[0].rows, ev.rows, s.reoptimize_resamples, seed=0)
        print(f"compiled − {label} [95% CI] over {len(examples)} examples: {format_delta(delta)}")


if __name__ == "__main__":
    main()
