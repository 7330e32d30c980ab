"""The full-track comparison in one table, from run records: per run the last-epoch mAP and macro AUC
(0.50 = the model ranks no stay above another: a collapsed run), wall and train time, and for
correcting methods the scored corrections at chosen epochs (precision / recall of the entries
flagged noisy, agreement of the corrected labels with the clean ones before -> after).

Usage: python perf/full_track_summary.py RESULTS [--epochs 6,15,30]
"""
from __future__ import annotations

import argparse

from tabulate import tabulate

from benchmark.records import RecordStore


def rows(results: str, epochs: list[int], track: str = "full") -> list[list]:
    out = []
    for _, record, error in RecordStore(results).scan(track):
        if error or record["status"] != "done":
            continue
        spec, curve = record["spec"], record["metrics"]["curve"]
        scored = {row["epoch"]: row["corrections"] for row in curve if row.get("corrections")}
        corrections = "; ".join(
            f"e{e}: P {c['flagged_noisy_precision']:.2f} R {c['flagged_noisy_recall']:.2f} "
            f"agree {c['agreement_before']:.3f}->{c['agreement_after']:.3f}"
            for e in epochs if (c := scored.get(e))
        )
        out.append([spec["task"], spec["noise"]["name"], record["method"]["display_name"], spec["seed"],
                    f"{record['metrics']['final']['map']:.3f}", f"{record['metrics']['final']['macro_auc']:.3f}",
                    f"{record['timings']['total']:.0f}",
                    f"{record['timings']['train']:.0f}", record["environment"].get("packed_runs", 1),
                    corrections or "-"])
    return sorted(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--epochs", default="6,15,30")
    p.add_argument("--track", default="full")
    args = p.parse_args()
    headers = ["task", "noise", "method", "seed", "mAP", "macro AUC", "wall s", "train s", "packed", "corrections"]
    print(tabulate(rows(args.results, [int(e) for e in args.epochs.split(",")], args.track), headers))


if __name__ == "__main__":
    main()
