"""`unstable eval RUN...`: how far BAD moved a decoder, per prior temperature (paper, Figs. 2 and 3).

For each run folder (from `unstable train`: checkpoint.pt + piece.toml) and each temperature T in
{0.1, 0.5, 0.7, 1.0, 1.2, 1.5, 1.8, 2.0, 3.0}, it draws `samples` latents z ~ N(0, T^2 I) and
decodes them with the base decoder and the diverged one. Unless noted, measures live in the run's digit
classifier's feature space (10-d logits), whatever extractor the run was trained with:

- precision / recall (k-NN manifolds, k = 3) of the diverged samples against base samples drawn
  from *other* latents (so the base's own row shows the metric's noise floor, base vs base);
- precision / recall against the held-out real digits, in the run's classifier space and in the
  space of an independent "judge" classifier (another seed, half the width, trained once and
  cached beside the base models, never seen by BAD), since BAD optimises against the run's own
  classifier and can learn patterns that fool it.
  Read precision together with recall and diversity: k-NN precision does not punish a decoder
  that collapses onto a few points inside the data's manifold (a collapsed, near-black unbounded
  run can score precision near 1 against the data in both spaces with recall 0; docs/bad-findings.md).
  Pixel space is no better: in 784-d, near-black images fall inside the data's k-NN balls;
- typicality under an independent "density judge", a second VAE (another seed, trained once and
  cached, never seen by BAD): each sample is binarised like the data and scored by its negative
  ELBO; `typical` is the share of samples whose score lies between the 1st and 99th percentiles
  of the held-out real digits' scores (Nalisnick et al. 2019's typicality: a sample can leave
  the domain by being too unlikely, like speckle that fools a classifier, or too likely, like a
  blank image). Features can be fooled; a density model of the pixels is much harder to fool;
- class entropy, confidence and class coverage; diversity in feature and pixel space.

Writes metrics.csv, precision_recall.png (precision and recall against T, like Fig. 2) and
grid.png (rows: base and each run, columns: temperatures, like Fig. 3).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..checkpoint import check_compatible, load_checkpoint
from ..errors import UnstableError
from ..system import build_system, load_piece
from .cache import base_key, cached_model
from .classifier import ClassifierSettings, DigitClassifier, train_classifier
from .data import load_digits
from .features import freeze
from .vae import VAE, train_vae
from .metrics import class_stats, diversity, knn_radii, precision_recall

TEMPERATURES = (0.1, 0.5, 0.7, 1.0, 1.2, 1.5, 1.8, 2.0, 3.0)
FIELDS = ("run", "decoder", "temperature", "samples", "precision_vs_base", "recall_vs_base",
          "precision_vs_data", "recall_vs_data", "precision_vs_data_judge", "recall_vs_data_judge", "judge_entropy", "typical", "domain_nll", "class_entropy", "confidence", "class_coverage",
          "diversity_features", "diversity_pixels")


def run_paths(run: str | Path) -> tuple[Path, Path]:
    """(piece.toml, checkpoint) of a run folder, or of one of its kept checkpoints (RUN/checkpoints/step_N.pt)."""
    run = Path(run)
    if run.is_file() and run.suffix == ".pt":
        folder = run.parent.parent if run.parent.name == "checkpoints" else run.parent
        return folder / "piece.toml", run
    if not run.is_dir():
        raise UnstableError(f"{run}: run folder not found")
    return run / "piece.toml", run / "checkpoint.pt"


def run_name(run: str | Path) -> str:
    """A short label: the run folder's name, with the step for a kept checkpoint."""
    piece_path, ckpt = run_paths(run)
    return piece_path.parent.name + ("" if ckpt.name == "checkpoint.pt" else f"@{ckpt.stem}")


def load_run(run: str | Path, device: torch.device, progress: Callable | None = None):
    """The system of a run folder (or kept checkpoint), restored from its checkpoint (base models included)."""
    piece_path, ckpt_path = run_paths(run)
    run = piece_path.parent
    if not piece_path.is_file():
        raise UnstableError(f"{run}: no piece.toml in this run folder (is it a folder from `unstable train`?)")
    piece = load_piece(piece_path)
    if piece.kind != "divergence":
        raise UnstableError(f"{piece_path}: `unstable eval` evaluates divergence pieces, this one is {piece.kind!r}")
    payload = load_checkpoint(ckpt_path, map_location=device)
    system = build_system(piece, device)
    check_compatible(payload, piece.kind, system.fingerprint(), str(ckpt_path))
    if "base_decoder" not in payload["system"] and progress is not None:
        system.prepare(progress)  # an older checkpoint without its base models: use the cache
    system.load_state_dict(payload["system"])
    system.classifier.eval()
    return system


def judge_settings(piece) -> ClassifierSettings:
    """The judge: the piece's classifier recipe with another seed, half the width (cheap to train)
    and no adversarial training, so it is a plain second opinion whatever the run's classifier is."""
    return dataclasses.replace(piece.classifier, seed=piece.classifier.seed + 1000,
                               width=max(4, piece.classifier.width // 2), robust=0.0)


def load_judge(piece, digits, device: torch.device, progress: Callable | None = None) -> tuple[DigitClassifier, Path]:
    """The independent judge classifier of a piece's data and the file it came from: the base-model
    cache, else the shipped one (unstable/shipped/, hash checked), else trained now (announced)."""
    settings = judge_settings(piece)
    judge = freeze(DigitClassifier(settings.width).to(device))
    with torch.enable_grad():
        _, path, _ = cached_model(
            piece.cache, "judge", base_key("judge", data=piece.data, classifier=settings), judge,
            lambda: train_classifier(settings, digits.train_x, digits.train_y, digits.test_x, digits.test_y,
                                     device, progress, "judge classifier"), device,
            about="the judge classifier of `unstable eval` (a second opinion BAD never saw)", steps=settings.steps)
    return judge, path


def load_density_judge(piece, digits, device: torch.device, progress: Callable | None = None) -> tuple[VAE, Path]:
    """The independent density judge of a piece's data (a VAE with the base recipe and another
    seed) and the file it came from: the base-model cache, else the shipped one, else trained now."""
    settings = dataclasses.replace(piece.vae, seed=piece.vae.seed + 1000)
    vae = VAE(settings.latent, settings.hidden).to(device)
    with torch.enable_grad():
        _, path, _ = cached_model(
            piece.cache, "density-judge", base_key("density-judge", data=piece.data, vae=settings), vae,
            lambda: train_vae(settings, digits.train_x, digits.test_x, device, progress, "density judge (VAE)"),
            device, about="the density judge of `unstable eval` (a second VAE that scores how typical a sample is)",
            steps=settings.steps)
    return freeze(vae), path


@dataclasses.dataclass(frozen=True)
class Inference:
    """How `evaluate_runs` runs its forward passes; every setting keeps the maths (results agree
    within float tolerance, tests/test_eval_speed.py)."""

    # Batches of 250: the activations of a batch of 1000 (200 MB for the decoder's last layer) are
    # fresh pages every pass, and faulting them in costs as much system time as the convolutions.
    batch: int = 250
    # oneDNN's convolutions, the transposed ones above all, run much faster in NHWC
    # (docs/figures.md, "Figures moved out of docstrings").
    channels_last: bool = True
    # The held-out digits' features, the base reference draws and every set's k-NN radii are
    # computed once per base and reused across temperatures, decoders and runs.
    reuse: bool = True
    # inference_mode rather than no_grad: no version counters or view tracking on any tensor.
    inference_mode: bool = True

    def context(self):
        """The grad mode the forward passes run under."""
        return torch.inference_mode() if self.inference_mode else torch.no_grad()


FAST = Inference()
PLAIN = Inference(batch=1000, channels_last=False, reuse=False, inference_mode=False)  # the straightforward path, for comparison


@torch.no_grad()
def negative_elbo(vae: VAE, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Per-image negative ELBO (nats) of images [N, 1, 28, 28] binarised at 0.5 like the data,
    at the posterior mean (deterministic) -> [N]."""
    out = []
    for start in range(0, images.shape[0], batch):
        rec, kl = vae.image_losses((images[start:start + batch] > 0.5).float(), sample=False)
        out.append(rec + kl)
    return torch.cat(out)


def typical_share(scores: torch.Tensor, real_scores: torch.Tensor, low: float = 0.01, high: float = 0.99) -> float:
    """Share of `scores` [N] inside the [low, high] quantile band of the real digits' scores [M]."""
    lo, hi = torch.quantile(real_scores.double(), torch.tensor([low, high], dtype=torch.float64))
    return float(((scores.double() >= lo) & (scores.double() <= hi)).double().mean())


@torch.no_grad()
def _features(model, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model = getattr(model, "classifier", model)  # a system: its digit classifier
    return torch.cat([model(images[i:i + batch]) for i in range(0, images.shape[0], batch)])


def _decode(system, which: str, z: torch.Tensor, t: float, batch: int) -> torch.Tensor:
    return torch.cat([system.decode(which, z[i:i + batch], t) for i in range(0, z.shape[0], batch)])  # [S, 1, 28, 28]


class _Sets:
    """Feature sets [N, D] with their k-NN radii, each computed once when `reuse` (else every time)."""

    def __init__(self, k: int, reuse: bool):
        self.k, self.reuse, self.memo = k, reuse, {}

    def get(self, key, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, radii) of the set named `key`; radii None when not reusing (precision_recall
        then computes them itself, as the plain path always did)."""
        if not self.reuse:
            return compute(), None
        if key not in self.memo:
            self.memo[key] = self.one(compute())
        return self.memo[key]

    def one(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, radii) of a set measured against several references but never kept."""
        return features, (knn_radii(features, self.k) if self.reuse else None)

    def pr(self, ref: tuple, gen: tuple) -> tuple[float, float]:
        """precision_recall of gen against ref, both (features, radii) pairs."""
        return precision_recall(ref[0], gen[0], self.k, reference_radii=ref[1], generated_radii=gen[1])


def _run_rows(system, judge, density, digits, z_ref, z, temperatures, show_base: bool, sets: _Sets,
              how: Inference, name: str, samples: int, grid_rows: int, bar) -> tuple[list[dict], list, list]:
    """The metrics rows of one run and its grid tiles (base, diverged), one column per temperature."""
    device, b = system.device, how.batch
    test_x = digits.test_x.to(device)
    real = sets.get(("real",), lambda: _features(system, test_x, b))  # [N_test, 10]
    real_judged = sets.get(("real judged",), lambda: _features(judge, test_x, b))  # [N_test, 10]
    real_nll = negative_elbo(density, test_x, b)  # [N_test]
    rows, tiles_base, tiles_div = [], [], []
    for t in temperatures:
        ref = sets.get(("ref", t), lambda: _features(system, _decode(system, "base", z_ref, t, b), b))
        for which, label in (("base", "base"), ("decoder", "diverged")):
            if which == "base" and not show_base:
                continue
            images = _decode(system, which, z, t, b)  # [S, 1, 28, 28]
            feats = sets.one(_features(system, images, b))  # [S, 10]
            judged = sets.one(_features(judge, images, b))  # [S, 10]
            nll = negative_elbo(density, images, b)  # [S]
            p_base, r_base = sets.pr(ref, feats)
            p_data, r_data = sets.pr(real, feats)
            p_judge, r_judge = sets.pr(real_judged, judged)
            rows.append({"run": name, "decoder": label, "temperature": t, "samples": samples,
                         "precision_vs_base": p_base, "recall_vs_base": r_base,
                         "precision_vs_data": p_data, "recall_vs_data": r_data,
                         "precision_vs_data_judge": p_judge, "recall_vs_data_judge": r_judge,
                         "judge_entropy": class_stats(judged[0])["class_entropy"],
                         "typical": typical_share(nll, real_nll), "domain_nll": float(nll.mean()),
                         **class_stats(feats[0]), "diversity_features": diversity(feats[0]),
                         "diversity_pixels": diversity(images)})
            (tiles_base if which == "base" else tiles_div).append(images[:grid_rows].cpu().contiguous())
        if bar is not None:
            bar.update(1)
    return rows, tiles_base, tiles_div


def _channels_last(*modules: torch.nn.Module) -> None:
    # In place: the run's system and judges are loaded for this evaluation only.
    for m in modules:
        m.to(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate_runs(runs: Sequence[str | Path], out: str | Path | None = None, *, samples: int = 1000,
                  temperatures: Sequence[float] = TEMPERATURES, k: int = 3, grid_rows: int = 6, seed: int = 1234,
                  device: torch.device = torch.device("cpu"), progress: Callable | None = None,
                  fast: bool = True) -> Path:
    """Evaluate run folders; writes metrics.csv, precision_recall.png and grid.png to `out`.

    A run is a run folder or one of its kept checkpoints (RUN/checkpoints/step_N.pt). `out` defaults
    to `<first run>/eval`. `fast=False` takes the plain path (batches of 1000, NCHW, nothing
    reused): the same results within float tolerance, about twice the CPU time. Returns the output folder.
    """
    if not runs:
        raise UnstableError("eval: give at least one run folder")
    if samples <= k:
        raise UnstableError(f"eval: --samples must be larger than k = {k}")
    how = FAST if fast else PLAIN
    out = Path(out) if out is not None else run_paths(runs[0])[0].parent / "eval"
    rows: list[dict] = []
    grid_blocks: list[tuple[str, list[torch.Tensor]]] = []
    shared: dict[str, _Sets] = {}  # per base: the sets every run on that base is measured against
    judges: dict[str, Path] = {}  # where each judge came from: cache, shipped file, or trained now
    bar = progress("eval", total=len(runs) * len(temperatures)) if progress else None
    for run in runs:
        system = load_run(run, device, progress)
        piece = system.piece
        name = run_name(run)
        digits = load_digits(piece.data, cache=piece.cache)
        judge, judges[f"judge ({name})"] = load_judge(piece, digits, device, progress)
        density, judges[f"density judge ({name})"] = load_density_judge(piece, digits, device, progress)
        if how.channels_last:
            _channels_last(system.decoder, system.base_decoder, system.classifier, judge, density)
        g = torch.Generator().manual_seed(seed)
        latent = piece.vae.latent
        z_ref = torch.randn(samples, latent, generator=g)   # base reference draw
        z = torch.randn(samples, latent, generator=g)       # evaluated draw (both decoders)
        # The base id covers the data, the base VAE and classifier, and so both judges' settings.
        base_id = base_key("base", data=piece.data, vae=piece.vae, classifier=piece.classifier)
        show_base = base_id not in shared
        sets = shared.setdefault(base_id, _Sets(k, how.reuse))
        with how.context():
            run_rows, tiles_base, tiles_div = _run_rows(system, judge, density, digits, z_ref, z, temperatures,
                                                        show_base, sets, how, name, samples, grid_rows, bar)
        rows += run_rows
        if show_base:
            grid_blocks.append((f"base ({name})" if len(runs) > 1 else "base", tiles_base))
        grid_blocks.append((f"{name} (step {system.step_count})", tiles_div))
    if bar is not None:
        bar.close()

    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "metrics.csv", rows)
    plot_precision_recall(out / "precision_recall.png", rows)
    plot_grid(out / "grid.png", grid_blocks, temperatures)
    summary = {"runs": [str(r) for r in runs], "samples": samples, "k": k, "temperatures": list(temperatures),
               "base_metrics": {run_name(r): load_run_metrics(r) for r in runs},
               "judges": {label: str(path) for label, path in judges.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out


def load_run_metrics(run: str | Path) -> dict:
    """The base models' held-out metrics stored in a run's checkpoint (classifier accuracy, VAE losses)."""
    payload = load_checkpoint(run_paths(run)[1])
    return {k: float(v) for k, v in payload["system"].get("base_metrics", {}).items()}


def write_csv(path: Path, rows: list[dict]) -> None:
    """One row per (run, decoder, temperature); floats with 5 significant digits."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in row.items()})
    tmp.replace(path)


def _mpl():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    return plt


def plot_precision_recall(path: Path, rows: list[dict]) -> None:
    """Over temperature, one line per decoder: precision and recall against the base decoder (the
    paper's Fig. 2), and the two domain checks: precision against held-out digits and the share
    of samples typical under the density judge."""
    plt = _mpl()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4), sharey=True)
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(f"{row['run']} {row['decoder']}", []).append(row)
    panels = ((axes[0], "precision_vs_base", "precision vs base decoder (k-NN, k = 3)"),
              (axes[1], "recall_vs_base", "recall vs base decoder (k-NN, k = 3)"),
              (axes[2], "precision_vs_data", "precision vs held-out digits (k-NN, k = 3)"),
              (axes[3], "typical", "typical under the density judge (VAE)"))
    for ax, key, title in panels:
        for label, rs in series.items():
            style = "--" if label.endswith(" base") else "-"
            ax.plot([r["temperature"] for r in rs], [r[key] for r in rs], style, marker="o", label=label)
        ax.set_xlabel("temperature T")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_grid(path: Path, blocks: list[tuple[str, list[torch.Tensor]]], temperatures: Sequence[float]) -> None:
    """Rows: decoders (base, runs); columns: temperatures; each cell a column of samples [n, 1, 28, 28]."""
    plt = _mpl()
    n = blocks[0][1][0].shape[0]
    fig, axes = plt.subplots(len(blocks), 1, squeeze=False,
                             figsize=(0.75 * len(temperatures) + 1.2, len(blocks) * (0.75 * n + 0.5)))
    for ax, (label, tiles) in zip(axes[:, 0], blocks):
        gap = torch.ones(2, 28)
        columns = [torch.cat([c for img in t[:, 0] for c in (img, gap)][:-1], dim=0) for t in tiles]  # [n*30-2, 28]
        pad = torch.ones(columns[0].shape[0], 2)
        canvas = torch.cat([c for col in columns for c in (col, pad)][:-1], dim=1)
        ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([i * 30 + 14 for i in range(len(temperatures))], [f"T={t:g}" for t in temperatures], fontsize=7)
        ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def rows_at(rows_csv: str | Path, temperature: float) -> list[dict]:
    """The rows of a metrics.csv at one temperature (for reports)."""
    with open(rows_csv) as f:
        return [r for r in csv.DictReader(f) if abs(float(r["temperature"]) - temperature) < 1e-9]
