"""The uncompiled program as built against the same program under other settings, paired, with a 95% interval.

    python docs/bench/config_ab.py rag ../shared/datasets/hotpotqa-mini second_hop=links --split dev --split test

Each KEY=VALUE is parsed as YAML, as `dspyc compile --set` does.
"""

import argparse

from dspyc import registry
from dspyc.cli import parse_overrides
from dspyc.compiler import build_uncompiled, configure, evaluate_many
from dspyc.settings import get_settings
from dspyc.stats import format_delta, paired_delta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("program")
    ap.add_argument("data")
    ap.add_argument("settings", nargs="+", help="KEY=VALUE")
    ap.add_argument("--split", action="append", default=None)
    args = ap.parse_args()
    changed = parse_overrides(args.settings)
    s = get_settings()
    configure(s)
    spec = registry.get(args.program)
    base, dataset, _ = build_uncompiled(args.program, args.data)
    other = build_uncompiled(args.program, config=changed, dataset=dataset)[0]
    for split in args.split or ["dev"]:
        examples = dataset.splits[split]
        evs = evaluate_many([(str(changed), other, examples), ("as built", base, examples)], spec, s.num_threads)
        for label, ev in zip((str(changed), "as built"), evs):
            print(split, label, {k: round(v, 3) for k, v in ev.scores.items()})
            print(split, label, "cost per call", {k: round(v, 2) for k, v in ev.cost.items()})
        delta = paired_delta(evs[0].rows, evs[1].rows, s.reoptimize_resamples, seed=0)
        print(f"{split}: {changed} − as built [95% CI] over {len(examples)} examples: {format_delta(delta)}")


if __name__ == "__main__":
    main()
