"""Diagnostic runs for a training collapse (constant predictions, test macro AUC 0.50), outside the
benchmark's protocol: one run of a method with the backbone's regularisers scaled and/or another
cosine period, printing per epoch the test mAP, macro AUC and learning rate.

Why: on the full PHE track Focal and ASL collapse when the periodic learning rate returns to 1e-3
(methods/focal/README.md). Is it the FlexCare regularisers (``--aux-scale 0``) or the schedule
(``--t-max 30``)? Each record says what was changed (``spec.diagnostic``), but its run id is the
protocol run's: these are not benchmark results, so keep them in a results folder of their own.

Usage: python perf/collapse_check.py --method focal --noise sym-40 --aux-scale 0 --encoder DIR \
           --results docs/records/diagnostics-h100/no-regularisers [--t-max 10] [--track full --task mimic4-phe]
"""
from __future__ import annotations

import argparse
import dataclasses

import benchmark.runner as runner
from benchmark.backbones import flexcare
from benchmark.options import Execution


def scale_backbone_aux(scale: float) -> None:
    """Multiply FlexCare's regularisers (0.5 L_ortho + L_moe) by ``scale`` in every model built after."""
    forward = flexcare.FlexCare.forward

    def scaled(self, batch):
        out = forward(self, batch)
        return dataclasses.replace(out, aux=out.aux * scale)

    flexcare.FlexCare.forward = scaled


def with_cosine_period(t_max: int) -> None:
    """Give every track's budget another cosine period (the protocol's is 10 epochs)."""
    get_track = runner.get_track

    def patched(name):
        track = get_track(name)
        return dataclasses.replace(track, budget=dataclasses.replace(track.budget, cosine_t_max=t_max))

    runner.get_track = patched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True)
    p.add_argument("--track", default="full")
    p.add_argument("--task", default="mimic4-phe")
    p.add_argument("--noise", default="sym-40")
    p.add_argument("--seed", type=int, default=30)
    p.add_argument("--encoder", default=None)
    p.add_argument("--aux-scale", type=float, default=1.0, help="factor on the backbone's regularisers")
    p.add_argument("--t-max", type=int, default=None, help="cosine period in epochs (protocol: 10)")
    p.add_argument("--results", required=True)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if args.aux_scale != 1.0:
        scale_backbone_aux(args.aux_scale)
    if args.t_max is not None:
        with_cosine_period(args.t_max)
    spec = runner.plan(args.method, args.track, [args.task], [args.noise], [args.seed], encoder=args.encoder).specs[0]
    spec["diagnostic"] = {"aux_scale": args.aux_scale, "cosine_t_max": args.t_max}  # in the record, not the run id
    record = runner.run_one(spec, args.results, Execution(device=args.device))
    if record["status"] != "done":
        raise SystemExit(f"run failed: {record['failure']}")
    for row in record["metrics"]["curve"]:
        print(f"epoch {row['epoch']:2d}  lr {row['lr']:.2e}  mAP {row['map']:.3f}  macro AUC {row['macro_auc']:.3f}")


if __name__ == "__main__":
    main()
