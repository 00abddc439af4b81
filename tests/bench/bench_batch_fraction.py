"""What BAD's live `batch_fraction` changes in the divergence, for an equal training-time budget.

    nice -n 19 .venv/bin/python tests/bench/bench_batch_fraction.py [--seconds 90] [--fractions 1,0.25]
        [--start shows/demo.states/bad.pt | --start seed] [--samples 1000] [--temperatures 1.0]

A live show is bound by the wall clock, not by a step count: this trains one copy of the piece per
fraction from the same start (the demo's shipped state, 100 steps in, by default), each for the same
number of *training seconds*. The steps are interleaved in one process (the copy that has used the
least time steps next, through the `TrainingGuard` as live and `unstable train` step), so the load of
a shared machine falls on every setting alike; compare the step-time *ratio*, not the absolute times.

Then it measures the start state and every result three ways:
- the training log: L_div (class-wise MMD), L_reg (global MMD) and the batch's class entropy,
  averaged over thirds of the training time (each setting's own, noisier at smaller batches);
- the objective on one fixed batch (`--eval-batch` latents at T = 1 and as many real digits, the
  decoder in eval mode, as drawn): the same yardstick for every setting;
- `unstable eval` (`evaluate_runs`) at `--temperatures`: precision/recall vs held-out digits in the
  run's classifier space and the judge's, typicality under the density judge, class entropy,
  confidence, coverage, diversity.

Prints one table (and, with --json, writes the figures). Uses (or first trains and caches) the
piece's base models and the eval's judges, like `unstable eval`; that time is not part of the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def fixed_batch_terms(system, n: int, seed: int = 4321) -> dict[str, float]:
    """L_div, L_reg, objective and class entropy of `system`'s decoder (eval mode) on n fixed latents
    at T = 1 and n fixed real digits: one yardstick for every setting."""
    from unstable.divergence.losses import objective
    from unstable.divergence.objective import bad_terms, class_logits

    g = torch.Generator().manual_seed(seed)
    pool = system._real_pool()
    z = torch.randn(n, system.piece.vae.latent, generator=g)
    idx = torch.randint(0, pool["features"].shape[0], (n,), generator=g)
    with torch.no_grad():
        images = system.decode("decoder", z, 1.0)
        fake = system.extractor(images)
        l_div, l_reg, _ = bad_terms(system.piece, system.classifier, system.gen, images, fake, pool["features"][idx],
                                    pool["labels"][idx], pool)
        prob = torch.softmax(class_logits(system.piece, system.classifier, images, fake), 1)
        entropy = float(-(prob * prob.clamp_min(1e-12).log()).sum(1).mean())
    b = system.piece.bad
    return {"L_div": float(l_div), "L_reg": float(l_reg),
            "objective": float(objective(l_div, l_reg, b.alpha, b.beta, system.piece.loss.form)),
            "class_entropy": entropy}


def thirds(log: list[dict], seconds: float, key: str) -> list[float]:
    """Mean of `key` over the steps ending in each third of the training time."""
    out = []
    for i in range(3):
        lo, hi = seconds * i / 3, seconds * (i + 1) / 3
        vals = [r[key] for r in log if lo < r["t"] <= hi or (i == 2 and r["t"] > hi)]
        out.append(statistics.fmean(vals) if vals else float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piece", default="pieces/bad-custom-mmd.toml")
    parser.add_argument("--start", default="shows/demo.states/bad.pt",
                        help="checkpoint every setting starts from, or 'seed' (the piece's base decoder, step 0)")
    parser.add_argument("--fractions", default="1,0.25", help="comma-separated batch_fraction values")
    parser.add_argument("--seconds", type=float, default=90.0, help="training seconds per setting")
    parser.add_argument("--samples", type=int, default=1000, help="eval samples per temperature")
    parser.add_argument("--temperatures", default="1.0", help="comma-separated eval temperatures")
    parser.add_argument("--eval-batch", type=int, default=1024, help="latents of the fixed-batch objective")
    parser.add_argument("--reseed", type=int, default=-1,
                        help="reseed the copies' latent/real-batch generator after loading the start (a replicate); "
                             "-1 keeps the start's")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from unstable.checkpoint import save_checkpoint
    from unstable.divergence.evaluate import evaluate_runs, rows_at
    from unstable.frame.sources import load_run_into
    from unstable.guard import TrainingGuard
    from unstable.system import build_system, load_piece
    from unstable.trainer import checkpoint_payload, progress_bar

    device = torch.device(args.device)
    fractions = [float(f) for f in args.fractions.split(",")]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    piece = load_piece(args.piece)

    def fresh_system():
        system = build_system(piece, device)
        system.prepare(progress_bar)
        if args.start != "seed":
            load_run_into(system, Path(args.start), device)
        if args.reseed >= 0:
            system.gen.manual_seed(args.reseed)
        return system

    start = fresh_system()
    runs = {}
    for f in fractions:
        system = fresh_system()
        params = {s.name: s.default for s in system.param_specs()}
        params["batch_fraction"] = f
        runs[f] = {"system": system, "guard": TrainingGuard(system, name=piece.name), "params": params,
                   "used": 0.0, "times": [], "log": []}

    # Interleaved: the setting with the least training time used steps next, until each has used --seconds.
    while True:
        todo = [r for r in runs.values() if r["used"] < args.seconds]
        if not todo:
            break
        r = min(todo, key=lambda r: r["used"])
        t0 = time.perf_counter()
        scalars = r["guard"].step(r["params"])
        dt = time.perf_counter() - t0
        r["used"] += dt
        r["times"].append(dt)
        if scalars is not None:
            r["log"].append({"t": r["used"], "L_div": scalars["class_mmd"], "L_reg": scalars["global_mmd"],
                             "objective": scalars["objective"], "class_entropy": scalars["class_entropy"],
                             "batch": scalars["batch"]})

    labels = {"start": start, **{f"bf{f:g}": r["system"] for f, r in runs.items()}}
    fixed = {label: fixed_batch_terms(system, args.eval_batch) for label, system in labels.items()}
    print("fixed batch:", json.dumps(fixed), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-bf-"))
    try:
        folders = []
        for label, system in labels.items():
            folder = tmp / label
            folder.mkdir()
            shutil.copyfile(args.piece, folder / "piece.toml")
            save_checkpoint(folder / "checkpoint.pt", checkpoint_payload(system, args.piece))
            folders.append(folder)
        out = evaluate_runs(folders, tmp / "eval", samples=args.samples, temperatures=temperatures, device=device)
        evals = {t: {(row["run"], row["decoder"]): row for row in rows_at(out / "metrics.csv", t)} for t in temperatures}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ref = fractions[0]
    ref_step = statistics.median(runs[ref]["times"])
    result = {"piece": args.piece, "start": args.start, "reseed": args.reseed, "start_step": start.step_count,
              "seconds": args.seconds,
              "load_average": os.getloadavg(), "threads": torch.get_num_threads(), "settings": {}}
    for label in labels:
        entry = {"fixed_batch": fixed[label],
                 "eval": {t: {k: evals[t][(label, "diverged")][k] for k in
                              ("precision_vs_data", "recall_vs_data", "precision_vs_data_judge", "recall_vs_data_judge",
                               "typical", "class_entropy", "confidence", "class_coverage", "judge_entropy",
                               "diversity_features", "diversity_pixels")} for t in temperatures}}
        if label != "start":
            f = float(label[2:])
            r = runs[f]
            med = statistics.median(r["times"])
            entry.update(batch=r["log"][-1]["batch"] if r["log"] else None, steps=len(r["times"]),
                         recoveries=r["guard"].recoveries, step_ms_median=1000 * med,
                         step_time_ratio=med / ref_step, steps_per_s=len(r["times"]) / r["used"],
                         end_step=r["system"].step_count,
                         **{f"{k}_thirds": thirds(r["log"], args.seconds, k)
                            for k in ("L_div", "L_reg", "objective", "class_entropy")})
        result["settings"][label] = entry
    result["base_eval"] = {t: {k: evals[t][("start", "base")][k] for k in
                               ("precision_vs_data", "recall_vs_data", "typical", "class_entropy")} for t in temperatures}

    # One table.
    cols = list(labels)
    print(f"# {args.piece}: start {args.start} (step {start.step_count}), reseed {args.reseed}, "
          f"{args.seconds:g} training s a setting, "
          f"interleaved; load {result['load_average'][0]:.1f}, {result['threads']} threads")
    rows = [("batch (samples a step)", lambda e: e.get("batch", "")),
            ("steps in the budget", lambda e: e.get("steps", "")),
            ("end step", lambda e: e.get("end_step", start.step_count)),
            ("median step ms", lambda e: e.get("step_ms_median", "")),
            (f"step time / bf{ref:g}'s", lambda e: e.get("step_time_ratio", "")),
            ("steps/s", lambda e: e.get("steps_per_s", "")),
            ("guard recoveries", lambda e: e.get("recoveries", ""))]
    for k in ("L_div", "L_reg", "class_entropy"):
        rows.append((f"log {k}, thirds of the time", lambda e, k=k: " / ".join(f"{v:.3f}" for v in e[f"{k}_thirds"])
                     if f"{k}_thirds" in e else ""))
    for k in ("L_div", "L_reg", "objective", "class_entropy"):
        rows.append((f"fixed batch {args.eval_batch}: {k}", lambda e, k=k: e["fixed_batch"][k]))
    for t in temperatures:
        for k in ("class_entropy", "confidence", "class_coverage", "precision_vs_data", "recall_vs_data",
                  "precision_vs_data_judge", "recall_vs_data_judge", "typical", "judge_entropy",
                  "diversity_features", "diversity_pixels"):
            rows.append((f"eval T={t:g}: {k}", lambda e, k=k, t=t: e["eval"][t][k]))

    def fmt(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{v:.4g}" if isinstance(v, float) else str(v)
        try:
            return f"{float(v):.4g}"  # the eval's CSV strings
        except (TypeError, ValueError):
            return str(v)

    print("| what | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, get in rows:
        print(f"| {name} | " + " | ".join(fmt(get(result["settings"][c])) for c in cols) + " |")
    for t in temperatures:
        b = result["base_eval"][t]
        print(f"base decoder at T={t:g}: class_entropy {float(b['class_entropy']):.4g}, precision_vs_data "
              f"{float(b['precision_vs_data']):.4g}, recall_vs_data {float(b['recall_vs_data']):.4g}, "
              f"typical {float(b['typical']):.4g}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
