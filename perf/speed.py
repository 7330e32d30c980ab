"""Training speed, the same spec two ways: ``naive`` (what the reference does) and ``fast`` (our path).

naive: every step tokenises the batch's notes and runs the frozen text encoder on them, in fp32, with
       197 padded image tokens in the sequence and a non-fused Adam, as the reference code does; and, as
       its training loop does, with autograd anomaly detection on, the batch (and an all-zero chest
       X-ray) copied from pinned host memory, and the loss read back, every step. ``naive_lean`` is the
       same without those three, for comparison (inputs resident on the device).
fast:  the harness's own run (``benchmark.runner.run_one``): cached note embeddings, tensors resident
       on the device, bf16 autocast, fused Adam, per-batch padding widths, FlexCare over real positions
       only (``--token-layout varlen``: position-wise layers and attention), no host sync inside an epoch.

Prints and writes (``--out``) ms per step, epoch time, whole-run time, samples per second, peak memory,
the FLOP floor of a step and the naive/fast ratio (also per steady step: without the first epoch's
warm-up, graph captures and compilation, as a grid's later runs step); with ``--pack K`` also the grid throughput of K runs
sharing the GPU (as threads, and as processes) against one run alone, and with ``--parity ENCODER``
the quick track's last-epoch mAP of the fast path against eager fp32 over three seeds plus a fixed-seed
forward pass in both. Usage (on a GPU):
    python perf/speed.py --track full --task mimic4-phe --encoder DIR [--naive-steps 20] [--out FILE]
``DIR`` is a Hugging Face encoder folder; ``--make-random-bert DIR --tokenizer TOKDIR`` first writes a
BERT-base-sized encoder with random weights there (timing does not need trained weights).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.cards import label_names
from benchmark.data import cache_key, materialise, notes, synthetic_files
from benchmark.data.cache import TensorCache
from benchmark.data.loaders import read_split
from benchmark.method import TaskInfo
from benchmark.protocol import get_track
from benchmark.registry import get_method
from benchmark.runner import execute, plan, run_one
from benchmark.fastpath import autocast_dtype, inputs
from benchmark.options import Execution
from benchmark.trainer import seed_everything

CXR_TOKENS = 197


def make_random_bert(folder: Path, tokenizer_dir: Path) -> None:
    from transformers import BertConfig, BertModel

    if (folder / "config.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder)  # BERT-base: 12 x 768, vocab 30522
    for f in tokenizer_dir.iterdir():  # the tokenizer's files only: never its config or weights
        if f.is_file() and f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            (folder / f.name).write_bytes(f.read_bytes())


def ceilings(device: torch.device) -> dict:
    """Measured bf16 matmul rate and device-to-device copy bandwidth."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    x = torch.empty(1 << 28, device=device, dtype=torch.float32).normal_()
    y = torch.empty_like(x)

    def timed(fn, reps=20):
        for _ in range(3):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    t_mm = timed(lambda: a @ b)
    t_cp = timed(lambda: y.copy_(x))
    return {"bf16_matmul_tflops": 2 * 8192**3 / t_mm / 1e12, "copy_gbps": 2 * x.numel() * 4 / t_cp / 1e9}


def step_flops(batch: int, t_ehr: int, t_note: int, size, note_dim: int, labels: int) -> float:
    """Matrix-multiply FLOPs of one training step (forward + backward ~ 3x forward)."""
    d, s = size.hidden, 2 + (1 + t_ehr) + (1 + t_note)
    per_layer = batch * s * (4 * d * d + 2 * d * size.ff) * 2 + 2 * batch * s * s * d * 2
    inputs = batch * (t_ehr * 76 + t_note * note_dim) * d * 2
    moe = batch * 3 * size.experts * 2 * d * d * 2
    return 3 * (size.layers * per_layer + inputs + moe + batch * 2 * d * labels * 2)


def real_step_flops(ehr_len: torch.Tensor, note_len: torch.Tensor, size, note_dim: int, labels: int) -> float:
    """``step_flops`` over real positions only (batches of lengths [n_batches, B]): position-wise work
    on each sample's own 4 + series + note positions, attention within each sample."""
    d = size.hidden
    positions = 4 + ehr_len + note_len
    per_layer = positions.sum(1).mean() * (4 * d * d + 2 * d * size.ff) * 2 + (positions**2).sum(1).mean() * d * 4
    inputs = (ehr_len * 76 + note_len * note_dim).sum(1).mean() * d * 2
    b = ehr_len.shape[1]
    moe = b * 3 * size.experts * 2 * d * d * 2
    return float(3 * (size.layers * per_layer + inputs + moe + b * 2 * d * labels * 2))


def naive_steps(spec, data, texts: list[str], encoder_name: str, steps: int, device: torch.device,
                as_written: bool = True) -> dict:
    """The reference's way: per-step tokenisation + frozen encoder (fp32), padded image tokens.

    ``as_written``: also what the reference's training loop does around the model (FlexCare's
    ``main_mt.py``; MIRACL's ``main_mt_test_main.py`` does the same): autograd anomaly detection on
    (``torch.autograd.set_detect_anomaly(True)`` at import), each batch assembled on the host by
    DataLoader workers in pinned memory (not timed: workers overlap it) and copied to the device in
    the step, with its all-zero chest X-ray ``[B, 3, 224, 224]``, and the loss read back every step
    (``train_loss += loss.item()``). Left out: the patch embedding of that zero image (a small
    convolution), so the step is, if anything, cheaper than the reference's. Without ``as_written``
    the inputs are resident on the device and anomaly detection is off (the lean reading)."""
    entry = get_method("bce")
    track = get_track(spec["track"])
    tokenizer, encoder = notes.load(encoder_name, device)
    encoder.train()  # the reference leaves its frozen encoder in training mode (dropout on)
    info = TaskInfo(spec["task"], "phenotyping", data.spec.num_labels, len(data.train), 76,
                    encoder.config.hidden_size, tuple(data.label_names), track.backbone)
    method = entry.load_class()(info, spec["method"]["hparams"])
    model = method.build_model().to(device)
    # The image's patch tokens ride in the note tensor here: give them positions past the note's 512
    # (a timing model; the reference embeds them apart), so that notes at the 512 cap fit.
    need = 1 + 512 + CXR_TOKENS
    if model.note_pos.shape[1] < need:
        model.note_pos = torch.nn.Parameter(F.pad(model.note_pos.detach(), (0, 0, 0, need - model.note_pos.shape[1])))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = data.train if as_written else data.train.to(device)
    order = torch.randperm(len(train), device=train.labels.device)
    times = []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batches = order.split(128)
    pinned = (lambda t: t.pin_memory()) if device.type == "cuda" else (lambda t: t)
    to_device = lambda t: t.to(device)  # noqa: E731
    for k in range(steps + 3):
        index = batches[k % len(batches)]
        batch = train.batch(index, train.batch_widths([index])[0])
        labels = train.labels[index].float()
        if as_written:  # what the DataLoader's workers hand over: host tensors in pinned memory
            batch, labels, cxr = _inputs(batch, labels, torch.zeros(len(index), 3, 224, 224), pinned)
        batch_texts = [texts[i] for i in index.tolist()]
        sync()
        t0 = time.perf_counter()
        if as_written:  # the reference's copies; the zero X-ray is copied though never read here
            batch, labels, cxr = _inputs(batch, labels, cxr, to_device)
        with torch.autograd.set_detect_anomaly(as_written):
            tok = tokenizer(batch_texts, padding=True, truncation=True, max_length=512, add_special_tokens=False,
                            return_tensors="pt").to(device)
            with torch.no_grad():
                hidden = encoder(**tok).last_hidden_state if tok["input_ids"].shape[1] else torch.zeros(len(index), 1, encoder.config.hidden_size, device=device)
            pad = torch.zeros(len(index), CXR_TOKENS, hidden.shape[-1], device=device)
            batch = dataclasses.replace(batch, note=torch.cat([hidden, pad], 1), note_len=tok["attention_mask"].sum(1))
            out = model(batch)
            loss = F.binary_cross_entropy_with_logits(out.logits, labels) + out.aux
            opt.zero_grad()
            loss.backward()
            opt.step()
        loss.item()
        sync()
        if k >= 3:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    return {"ms_per_step": 1e3 * statistics.median(times), "peak_memory_gb": peak, "as_written": as_written}


def _inputs(batch, labels: torch.Tensor, cxr: torch.Tensor, move):
    """``move`` applied to what the reference's loop copies to the device each step (the note is
    tokenised and encoded there instead)."""
    batch = dataclasses.replace(batch, **{f: move(getattr(batch, f)) for f in ("ehr", "ehr_len", "patient_id")})
    return batch, move(labels), move(cxr)


def packing(task: str, track: str, encoder: str, k: int, mode: str, single_epoch_s: float,
            device: str = "cuda") -> dict:
    """K whole runs at once (the track's budget: a run's epochs are not a free parameter); throughput
    against one run alone, from the per-epoch training time of each."""
    noises = ["sym-20", "sym-40", "asym-0-20", "asym-0-40", "asym-20-0", "asym-40-0", "bal-20", "bal-40"][:k]
    specs = plan("bce", track, [task], noises, [30], encoder=encoder).specs
    results = tempfile.mkdtemp(prefix=f"pack-{mode}-")
    t = time.perf_counter()
    records = execute(specs, results, Execution(device=device, jobs=k, packing=mode), lambda spec, record: None)
    wall = time.perf_counter() - t
    failed = [r["failure"] for r in records if r["status"] != "done"]
    if failed:
        return {"failed": failed}
    epochs = len(records[0]["metrics"]["curve"])
    per_epoch = statistics.mean(r["timings"]["train"] / len(r["metrics"]["curve"]) for r in records)
    return {"runs": k, "epochs": epochs, "wall_s": wall, "packed_train_s_per_epoch": per_epoch,
            "single_train_s_per_epoch": single_epoch_s,
            "throughput_vs_sequential": k * single_epoch_s / per_epoch}


def parity(encoder: str) -> dict:
    """Quick track, sym-20, seeds 30/40/100: fast path (bf16, graphs, parts) vs eager fp32, plus one
    fixed-seed forward pass of a fresh model both ways."""
    out = {}
    for name, execution in {"fast": Execution(device="cuda", jobs=1),
                            "eager_fp32": Execution(device="cuda", jobs=1, precision="fp32", cuda_graphs="off",
                                                    length_chunks=1)}.items():
        specs = plan("bce", "quick", ["syn-phe"], ["sym-20"], [30, 40, 100], encoder=encoder).specs
        results = tempfile.mkdtemp(prefix=f"parity-{name}-")
        records = execute(specs, results, execution, lambda spec, record: None)
        maps = [r["metrics"]["final"]["map"] for r in records]
        out[name] = {"map": maps, "mean": statistics.mean(maps), "std": statistics.stdev(maps),
                     "train_s": [r["timings"]["train"] for r in records]}
    out["mean_difference"] = out["fast"]["mean"] - out["eager_fp32"]["mean"]
    device = torch.device("cuda")
    spec = plan("bce", "quick", ["syn-phe"], ["sym-20"], [30], encoder=encoder).specs[0]
    data = materialise(dataclasses.replace(get_track("quick").task("syn-phe"), encoder=encoder))
    info = TaskInfo("syn-phe", "phenotyping", data.spec.num_labels, len(data.train), 76, data.note_dim,
                    tuple(data.label_names), get_track("quick").backbone)
    seed_everything(30)
    model = get_method("bce").load_class()(info, spec["method"]["hparams"]).build_model().to(device).eval()
    test = data.test.to(device)
    rows = torch.arange(min(256, len(test)), device=device)
    with torch.no_grad():
        exact = model(test.batch(rows)).logits.float()
        (sorted_rows, widths), = test.chunked([rows], 4)
        with torch.autocast("cuda", dtype=autocast_dtype("auto", device)):
            fast = torch.empty_like(exact)
            fast[sorted_rows] = model(inputs(test, sorted_rows, widths)).logits.float()
    diff = (fast - exact).abs()
    out["forward_max_abs_diff"] = float(diff.max())
    out["forward_max_rel_diff"] = float((diff / exact.abs().clamp_min(1e-3)).max())
    out["forward_logit_scale"] = float(exact.abs().mean())
    return out


def _mps(start: bool) -> str:
    import subprocess

    cmd = ["nvidia-cuda-mps-control"] + (["-d"] if start else [])
    try:
        proc = subprocess.run(cmd, input=None if start else "quit\n", capture_output=True, text=True, timeout=20)
        return f"rc {proc.returncode} {proc.stdout.strip()} {proc.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable: {e}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--track", default="full")
    p.add_argument("--task", default="mimic4-phe")
    p.add_argument("--encoder", default=None, help="encoder folder (default: a BERT-base with random weights, made once)")
    p.add_argument("--make-random-bert", action="store_true")
    p.add_argument("--tokenizer", default=None, help="tokenizer files for --make-random-bert (default: MiniLM's)")
    p.add_argument("--naive-steps", type=int, default=20)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cuda", help="cpu only for a dry run of this script")
    p.add_argument("--pack", type=int, default=0, metavar="K", help="also measure K runs sharing the GPU")
    p.add_argument("--pack-modes", default="threads,processes")
    p.add_argument("--parity", default=None, metavar="ENCODER", help="also run the quick-track parity check")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--padded-too", action="store_true",
                   help="also time the fast run with FlexCare's padded token layout (the default is varlen on CUDA)")
    p.add_argument("--compiled-too", action="store_true",
                   help="also time the fast run with the model compiled (--compile on; compilation included)")
    p.add_argument("--packed-too", action="store_true",
                   help="also time the fast run with the packed layout (padded attention; the default before varlen)")
    p.add_argument("--length-chunks", default="1", metavar="K,K",
                   help="also time the fast run with these length-sorted parts per batch (e.g. 1,4)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.encoder is None:
        args.encoder, args.make_random_bert = str(TensorCache().root / "encoders" / "bert-base-random"), True
    if args.make_random_bert:
        make_random_bert(Path(args.encoder), Path(args.tokenizer or notes.resolve("minilm")))
    report = {"gpu": torch.cuda.get_device_name(), **ceilings(device)} if device.type == "cuda" else {
        "gpu": None, "bf16_matmul_tflops": 1.0, "copy_gbps": 1.0}

    track = get_track(args.track)
    task = dataclasses.replace(track.task(args.task), encoder=args.encoder)
    cache = TensorCache()
    t = time.perf_counter()
    files = synthetic_files(task, cache)
    report["generate_and_write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    data = materialise(task, cache)
    report["materialise_s"] = time.perf_counter() - t
    manifest = json.loads((cache.entry(task.name, cache_key(task, None)) / "manifest.json").read_text())
    report["build_seconds"] = manifest.get("build_seconds")

    spec = plan("bce", args.track, [args.task], ["sym-20"], [30], encoder=args.encoder).specs[0]
    results = tempfile.mkdtemp(prefix="speed-")
    record = run_one(spec, results, Execution(device=args.device))
    if record["status"] != "done":  # keep measuring without graphs, and say why
        report["fast_with_graphs_failed"] = record["failure"]
        save(report, args.out)
        record = run_one(spec, tempfile.mkdtemp(prefix="speed-"), Execution(device=args.device, cuda_graphs="off"))
        if record["status"] != "done":
            raise SystemExit(f"the fast run failed: {record['failure']}")
    steps_per_epoch = -(-len(data.train) // 128)
    epochs = spec["budget"]["epochs"]
    tm = record["timings"]
    report["fast"] = fast_summary(record, len(data.train), epochs, steps_per_epoch)
    lengths_e = data.train.ehr_len.float()
    lengths_n = data.train.note_len.float()
    # Expected padded widths of a random batch of 128: the batch maximum, estimated by sampling.
    idx = torch.randint(len(data.train), (200, 128))
    t_e, t_n = lengths_e[idx].amax(1).mean().item(), lengths_n[idx].amax(1).mean().item()
    flops = step_flops(128, int(t_e), int(t_n), track.backbone, data.note_dim, task.num_labels)
    report["fast"]["step_gflop"] = flops / 1e9
    report["fast"]["flop_floor_ms"] = 1e3 * flops / (report["bf16_matmul_tflops"] * 1e12)
    report["fast"]["floor_fraction"] = report["fast"]["flop_floor_ms"] / report["fast"]["ms_per_step"]
    # The work a step must do: only real positions, attention within each sample (no padding at all).
    real = real_step_flops(lengths_e[idx], lengths_n[idx], track.backbone, data.note_dim, task.num_labels)
    report["fast"]["real_positions_step_gflop"] = real / 1e9
    report["fast"]["real_positions_floor_ms"] = 1e3 * real / (report["bf16_matmul_tflops"] * 1e12)

    save(report, args.out)

    def variant(name: str, **switches) -> None:
        """The fast run again with other execution switches (same spec, fresh results folder)."""
        other = run_one(spec, tempfile.mkdtemp(prefix="speed-"), Execution(device=args.device, **switches))
        report[name] = (fast_summary(other, len(data.train), epochs, steps_per_epoch)
                        if other["status"] == "done" else {"failed": other["failure"]})
        save(report, args.out)

    if args.padded_too:
        variant("fast_padded", token_layout="padded")
    if args.packed_too:
        variant("fast_packed", token_layout="packed")
    if args.compiled_too:
        variant("fast_compiled", compile="on")
    for k in [int(c) for c in args.length_chunks.split(",") if c.strip() and int(c) > 1]:
        # Length-sorted parts per batch (same batches): less padding, more (captured) kernels.
        variant(f"fast_chunks_{k}", length_chunks=k)

    if not args.skip_naive:
        raw = read_split(files, task.layout, task.task_dir, "train", label_names(task.kind))
        report["naive"] = naive_steps(spec, data, raw.notes, args.encoder, args.naive_steps, device)
        # The same without the reference loop's anomaly detection and input copies, for comparison.
        report["naive_lean"] = naive_steps(spec, data, raw.notes, args.encoder, args.naive_steps, device,
                                           as_written=False)
        naive_train = report["naive"]["ms_per_step"] / 1e3 * steps_per_epoch * epochs
        report["naive"]["whole_run_estimate_s"] = naive_train + tm["eval"] + tm["data"]
        report["ratio_ms_per_step"] = report["naive"]["ms_per_step"] / report["fast"]["ms_per_step"]
        report["ratio_whole_run"] = report["naive"]["whole_run_estimate_s"] / tm["total"]
        for name in [k for k in report if k.startswith("fast") and "steady_ms_per_step" in report[k]]:
            report[f"ratio_steady_ms_per_step_{name}"] = report["naive"]["ms_per_step"] / report[name]["steady_ms_per_step"]
            report[f"ratio_lean_steady_ms_per_step_{name}"] = (report["naive_lean"]["ms_per_step"]
                                                               / report[name]["steady_ms_per_step"])
        save(report, args.out)
    single = tm["train"] / epochs
    for mode in (args.pack_modes.split(",") if args.pack else []):
        if mode == "processes":
            report["mps_start"] = _mps(True)
        try:
            report[f"pack_{mode}"] = packing(args.task, args.track, args.encoder, args.pack, mode,
                                             single, args.device)
        except Exception as e:  # noqa: BLE001 - a measurement script: report and go on to the next section
            report[f"pack_{mode}"] = {"error": f"{type(e).__name__}: {e}"}
        if mode == "processes":
            report["mps_stop"] = _mps(False)
        save(report, args.out)
    if args.parity:
        try:
            report["parity"] = parity(args.parity)
        except Exception as e:  # noqa: BLE001
            report["parity"] = {"error": f"{type(e).__name__}: {e}"}
        save(report, args.out)


def fast_summary(record: dict, n_train: int, epochs: int, steps_per_epoch: int) -> dict:
    tm = record["timings"]
    return {
        "whole_run_s": tm["total"],
        "train_s": tm["train"], "eval_s": tm["eval"], "data_s": tm["data"],
        "epoch_s": (tm["train"] + tm["eval"]) / epochs,
        "ms_per_step": 1e3 * tm["train"] / (epochs * steps_per_epoch),
        # Without the first epoch's warm-up, captures and compilation: the step as a long grid pays it.
        "steady_ms_per_step": 1e3 * ((tm["train"] - tm["train_first_epoch"]) / ((epochs - 1) * steps_per_epoch)
                                     if epochs > 1 else tm["train"] / steps_per_epoch),
        "first_epoch_train_s": tm["train_first_epoch"],
        "samples_per_s": epochs * n_train / tm["train"],
        "peak_memory_gb": record["peak_memory_bytes"] / 1e9,
        "final_map": record["metrics"]["final"]["map"],
        "graphs_captured": tm.get("graphs_captured", 0),
        "cuda_graphs": record["environment"].get("cuda_graphs"),
        "length_chunks": record["environment"].get("length_chunks"),
        "token_layout": record["environment"].get("token_layout"),
        "compile": record["environment"].get("compile"),
    }


def save(report: dict, out: str | None) -> None:
    """Print and write after every section: a later one may not finish within a time limit."""
    text = json.dumps(report, indent=1)
    print(text, flush=True)
    if out:
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
