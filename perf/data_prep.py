"""Time each stage of preparing a task: generation, writing the files, reading + discretising, and
(optionally) note encoding. Usage: python perf/data_prep.py TRACK TASK [--encode] [--out DIR]"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmark.cards import label_names
from benchmark.data import generator, notes, series_arrays
from benchmark.data.loaders import read_split
from benchmark.protocol import get_track


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("track")
    p.add_argument("task")
    p.add_argument("--encode", action="store_true", help="also encode the notes (GPU if there is one)")
    p.add_argument("--encoder", default=None, help="override the task's encoder (e.g. a BERT-base folder)")
    p.add_argument("--out", default=None, help="where to write the files (default: a temporary folder)")
    args = p.parse_args()
    spec = get_track(args.track).task(args.task)
    root = Path(args.out or tempfile.mkdtemp(prefix="ehrbench-perf-"))
    times = {}
    t = time.perf_counter()
    gen = generator.generate(spec)
    times["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    generator.write(gen, spec, root)
    times["write files"] = time.perf_counter() - t
    names = label_names(spec.kind)
    t = time.perf_counter()
    raw = {s: read_split(root, spec.layout, spec.task_dir, s, names) for s in ("train", "test")}
    times["read listfiles"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = sum(len(series_arrays(raw[s], spec)[0]) for s in raw)
    times["read episodes + discretise"] = time.perf_counter() - t
    if args.encode:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = notes.load(args.encoder or spec.encoder, device)
        texts = [x for s in raw for x in raw[s].notes]
        t = time.perf_counter()
        flat, _ = notes.encode(texts, args.encoder or spec.encoder, spec.note_tokens, device, model=model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[f"encode notes ({device.type})"] = time.perf_counter() - t
        times["tokens encoded"] = len(flat)
    times["samples"] = sum(len(r.keys) for r in raw.values())
    times["hourly rows"] = rows
    print(json.dumps({"task": spec.name, "track": args.track, **{k: round(v, 2) for k, v in times.items()}}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
