"""scripts/partial_eval.py RUN_OR_CHECKPOINT GRID.png: part of `unstable eval` for one run checkpoint: the same draws (seed 1234: z_ref, then z) and
measures in the run classifier's space, without the judge classifier and the density judge."""
import sys
from pathlib import Path
import torch
from unstable.divergence.evaluate import load_run, _features, plot_grid, TEMPERATURES
from unstable.divergence.metrics import class_stats, diversity, precision_recall
from unstable.divergence.data import load_digits

torch.set_num_threads(1)
run, out = sys.argv[1], Path(sys.argv[2])
s = load_run(run, torch.device("cpu"))
digits = load_digits(s.piece.data)
real = _features(s, digits.test_x)
g = torch.Generator().manual_seed(1234)
z_ref = torch.randn(1000, 16, generator=g)
z = torch.randn(1000, 16, generator=g)
tiles = {"base": [], "decoder": []}
print("step", s.step_count)
print("T,decoder,class_entropy,confidence,class_coverage,precision_vs_base,recall_vs_base,precision_vs_data,recall_vs_data,diversity_features")
for t in TEMPERATURES:
    ref = _features(s, s.decode("base", z_ref, t))
    for which in ("base", "decoder"):
        im = s.decode(which, z, t)
        tiles[which].append(im[:6])
        if t not in (0.5, 1.0, 1.5):
            continue
        f = _features(s, im)
        pb, rb = precision_recall(ref, f, 3)
        pd, rd = precision_recall(real, f, 3)
        c = class_stats(f)
        print(f"{t},{which},{c['class_entropy']:.3f},{c['confidence']:.3f},{c['class_coverage']:.3f},{pb:.3f},{rb:.3f},"
              f"{pd:.3f},{rd:.3f},{diversity(f):.2f}")
plot_grid(out, [("base", tiles["base"]), (f"creativity (step {s.step_count})", tiles["decoder"])], TEMPERATURES)
