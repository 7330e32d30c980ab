"""Small synthetic run records for the leaderboard's tests: valid by the schema, made in the test."""
from __future__ import annotations

import copy

from benchmark.records import SCHEMA_VERSION, RecordStore, run_id, validate

DISPLAY = {"bce": "FlexCare (BCE)", "focal": "Focal", "gce": "GCE", "asl": "ASL"}


def make_record(method="bce", noise="sym-20", seed=30, map=0.4, *, track="quick", task="syn-phe",
                status="done", data="a" * 64, harness="0.1.0", code="c" * 64, gpu=None, cpu="Test CPU 2-core",
                total=10.0, peak=2**26, parameters=1000, hparams=None, aucs=(0.7, 0.8), encoder=None, realised=None,
                noise_draw=0, detection=None, **metrics) -> dict:
    """``aucs``: the curve's macro AUC per epoch (the last is the final one); ``encoder``: the spec's note
    encoder; ``realised``: the (rho+, rho-) the noise realised; ``noise_draw``: the run's noise draw
    (``--noise-draws``; 0, the protocol's, leaves the spec as it was); ``detection``: the last curve row's
    detection scores (``detection_row``); ``metrics``: more fields of the record's ``metrics``
    (``collapsed=...``)."""
    family = noise.split("-")[0]
    spec = {"track": track, "task": task, "seed": seed, "noise_seed_policy": "reference",
            "method": {"name": method, "version": "1.0", "hparams": dict(hparams or {})},
            "noise": {"name": noise, "family": family}}
    if encoder is not None:
        spec["task_spec"] = {"encoder": encoder}
    if noise_draw:
        spec["noise_draw"] = {"index": noise_draw, "policy": "seed-sequence"}
    final = {"map": float(map), "micro_f1": 0.1, "macro_f1": 0.1, "macro_auc": float(aucs[-1]), "micro_auc": 0.5,
             "per_label_ap": [float(map)], "epoch": len(aucs), "labels_without_positives": []}
    curve = [{**final, "epoch": i + 1, "macro_auc": float(a)} for i, a in enumerate(aucs)]
    if detection is not None:
        curve[-1]["detection"] = detection
    record = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id(spec), "spec": spec, "status": status,
        "failure": None if status == "done" else "non-finite loss at epoch 2",
        "metrics": {"final": final, "curve": curve, **metrics} if status == "done" else {"final": {}, "curve": []},
        # Phases add up to the total: train 80 %, eval 10 %, data 10 %.
        "timings": {"data": 0.1 * total, "noise": 0.0, "train": 0.8 * total, "method_hooks": 0.0,
                    "eval": 0.1 * total, "total": total},
        "peak_memory_bytes": peak,
        "fingerprints": {"data": data, "noisy_labels": "b" * 64},
        "noise": {"rho_plus": 0.2, "rho_minus": 0.2, "seed": 123 + 1000 * noise_draw,
                  **({"realised_rho_plus": realised[0], "realised_rho_minus": realised[1]} if realised else {})},
        "method": {"display_name": DISPLAY.get(method, method), "code_hash": code, "parameters": parameters},
        "environment": {"harness_version": harness, "git": {"sha": "d" * 40, "dirty": False}, "cpu": cpu,
                        "gpu": gpu, "device": "cuda" if gpu else "cpu", "precision": "bf16" if gpu else "fp32",
                        "packed_runs": 1},
        "created_utc": "2026-01-01T00:00:00Z",
    }
    return validate(record, "factory")


def detection_row(missed=(0.5, 0.4, 0.444444, 0.3), spurious=(0.6, 0.2, 0.3, 0.25), base=(0.1, 0.2)) -> dict:
    """A curve row's ``detection`` with the given (precision, recall, f1, auprc) per direction; None for a
    direction means it had no flipped entry."""
    def direction(values, rate):
        if values is None:
            return {"candidates": 100, "noisy": 0, "flagged": 3, "true_positives": 0, "precision": None,
                    "recall": None, "f1": None, "auprc": None, "base_rate": 0.0}
        p, r, f, a = values
        return {"candidates": 100, "noisy": 10, "flagged": 8, "true_positives": 4, "precision": p, "recall": r,
                "f1": f, "auprc": a, "base_rate": rate}
    return {"threshold": 0.5, "missed_positive": direction(missed, base[0]),
            "spurious_positive": direction(spurious, base[1])}


def run_summary(map, ece=0.05, brier=0.1, rare=0.2, common=0.6, both=0.5, missing=0.4, half=0.02) -> dict:
    """The optional metrics sections a run of today's harness writes (``bootstrap``, ``secondary``)."""
    groups = {"both": both, "one_missing": missing, "ehr_only": missing, "note_only": missing}
    return {"bootstrap": {"b": 1000, "seed": 20240517, "level": 0.95, "unit": "patient", "patients": 30,
                          "low": map - half, "high": map + half, "std": half / 2, "mean": map},
            "secondary": {"ece": ece, "ece_bins": 15, "brier": brier,
                          "prevalence_bands": {"rare": {"low": 0.0, "high": 0.1, "labels": 3, "map": rare},
                                               "medium": {"low": 0.1, "high": 0.2, "labels": 0, "map": None},
                                               "common": {"low": 0.2, "high": 1.0, "labels": 4, "map": common}},
                          "modality": {g: {"n": 10, "map": v, "labels_without_positives": 0}
                                       for g, v in groups.items()}}}


# Secondary metrics of the syn-dia runs (the syn-phe ones are of a harness before them): ECE per method and seed.
DIA_ECE = {"bce": (0.05, 0.07, 0.06), "focal": (0.10, 0.12, 0.11), "gce": (0.20, 0.21, 0.22)}


# A small board: three methods x three noise settings x seeds 30, 40, 100 with known values.
MAPS = {
    "bce": {"sym-20": [0.40, 0.42, 0.41], "asym-0-20": [0.45, 0.44, 0.46], "bal-40": [0.30, 0.31, 0.29]},
    "focal": {"sym-20": [0.35, 0.36, 0.34], "asym-0-20": [0.44, 0.46, 0.45], "bal-40": [0.33, 0.36, 0.35]},
    "gce": {"sym-20": [0.30, 0.33, 0.31], "asym-0-20": [0.40, 0.41, 0.39], "bal-40": [0.34, 0.30, 0.32]},
}
SEEDS = (30, 40, 100)
DIA = {"bce": (0.50, 0.51, 0.52), "focal": (0.49, 0.50, 0.53), "gce": (0.45, 0.44, 0.46)}  # syn-dia sym-20


def board_records() -> list[dict]:
    """MAPS as records, plus cells that must be flagged: ASL with 2 seeds, a mixed-data cell
    (focal bal-40 seed 100 on other data would be one; here GCE's asym-20-0 mixes fingerprints)."""
    records = [make_record(m, n, s, v, total={"bce": 10.0, "focal": 11.0, "gce": 20.0}[m])
               for m, cells in MAPS.items() for n, values in cells.items() for s, v in zip(SEEDS, values)]
    records += [make_record("asl", "sym-20", s, v) for s, v in zip((30, 40), (0.50, 0.52))]
    records += [make_record("gce", "asym-20-0", s, 0.3 + 0.01 * i, data=("a" if i else "e") * 64)
                for i, s in enumerate(SEEDS)]
    records += [make_record("bce", "asym-20-0", s, 0.2, harness="0.1.0" if s != 100 else "0.2.0") for s in SEEDS]
    records.append(make_record("focal", "asym-20-0", 30, 0.0, status="failed"))
    # A second task, run on another hardware class (a GPU).
    records += [make_record(m, "sym-20", s, v, gpu="NVIDIA H100", total=t, task="syn-dia",
                            **run_summary(v, ece=e, missing=v - 0.1))
                for m, t in (("bce", 2.0), ("focal", 3.0), ("gce", 8.0))
                for s, v, e in zip(SEEDS, DIA[m], DIA_ECE[m])]
    return records


def write_records(root, records) -> RecordStore:
    store = RecordStore(root)
    for r in records:
        store.write(copy.deepcopy(r))
    return store
