"""Which images to label next (`igldt suggest`): rank the unlabelled pool by what the two teachers
disagree on, keep the picks apart from one another, and say why each was picked.

The pool is streamed one image at a time: what is kept per image is a few numbers, its per-class
counts and one small feature vector (for diversity), so memory does not grow with image size and
grows with the pool only by ~4 KB an image. Scores (A1)-(A4) are numbered in docs/labelling.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from igldt.class_balance import median_frequency

METHODS = ("disagreement", "balanced", "kl", "entropy", "random")
SCORES = ("disagreement", "balanced", "kl", "entropy")  # the columns every scored image gets
TEACHERLESS = ("entropy", "random")                     # the methods one network can serve
FEATURE_GRID = 2   # decoder features pooled to 2x2 per network: the scene's layout, ~2 KB an image
SHORTLIST = 3      # diverse picks come from the 3 x count best-ranked images
DIVERSITY = ("kcenter", "clusters")  # how --diverse spreads the picks: diverse_picks | cluster_picks
KMEANS_ITERS, KMEANS_ATTEMPTS = 100, 4  # cluster_picks' k-means: iterations per attempt, seeded restarts
EPS = 1e-8


# -- per-pixel maps ------------------------------------------------------------------------------------
def disagreement_map(p_global: torch.Tensor, p_local: torch.Tensor) -> torch.Tensor:
    """(A1) 1 where the teachers' argmax classes differ, else 0: B x H x W from two B x C x H x W softmaxes."""
    return (p_global.argmax(1) != p_local.argmax(1)).float()


def symmetric_kl_map(p_global: torch.Tensor, p_local: torch.Tensor) -> torch.Tensor:
    """(A2) KL(p_g || p_l) + KL(p_l || p_g) = sum_c (p_g - p_l)(log p_g - log p_l), per pixel: B x H x W."""
    p, q = p_global.float().clamp_min(EPS), p_local.float().clamp_min(EPS)
    return ((p - q) * (p.log() - q.log())).sum(1)


def entropy_map(p: torch.Tensor) -> torch.Tensor:
    """(A3) -sum_c p_c log p_c of a softmax, per pixel (nats): B x H x W."""
    p = p.float().clamp_min(EPS)
    return -(p * p.log()).sum(1)


# -- per-image statistics ------------------------------------------------------------------------------
@dataclass
class ImageStats:
    """What one pool image leaves behind: map sums over its N valid pixels, and per class c of the
    ensemble's prediction its pixels and its pixels where the teachers disagree."""
    pixels: int
    disagreement: float
    kl: float
    entropy: float
    class_pixels: np.ndarray      # C
    class_disagree: np.ndarray    # C
    top_pair: tuple[int, int, float] | None  # (global class, local class, share of pixels) most disagreed on


def image_stats(p_global: torch.Tensor, p_local: torch.Tensor | None, classes: int) -> ImageStats:
    """The statistics of one image from its softmax(es), 1 x C x H x W; one network (`p_local` None):
    entropy only, no disagreement."""
    ensemble = p_global if p_local is None else (p_global + p_local) / 2
    pred = ensemble.argmax(1).reshape(-1)
    n = pred.numel()
    class_pixels = torch.bincount(pred, minlength=classes).double().numpy()
    if p_local is None:
        return ImageStats(n, math.nan, math.nan, float(entropy_map(ensemble).sum()), class_pixels,
                          np.zeros(classes), None)
    d = disagreement_map(p_global, p_local).reshape(-1)
    class_disagree = torch.bincount(pred, weights=d.double(), minlength=classes).numpy()
    g, l = p_global.argmax(1).reshape(-1), p_local.argmax(1).reshape(-1)
    differ = g != l
    top = None
    if bool(differ.any()):
        pairs = torch.bincount(g[differ] * classes + l[differ], minlength=classes * classes)
        k = int(pairs.argmax())
        top = (k // classes, k % classes, float(pairs[k]) / n)
    return ImageStats(n, float(d.sum()), float(symmetric_kl_map(p_global, p_local).sum()),
                      float(entropy_map(ensemble).sum()), class_pixels, class_disagree, top)


def balanced_disagreement(stats: Sequence[ImageStats]) -> np.ndarray:
    """(A4) Class-balanced disagreement per image: sum_c w_c D_ic / N_i, D_ic the image's disagreeing
    pixels of (ensemble) class c, N_i its pixels, w_c the median-frequency weight of class c over the
    pool's predictions (`class_balance.median_frequency`), so a small region of a rare class counts as
    much as a large one of road or sky."""
    pixels = np.stack([s.class_pixels for s in stats])
    present_in = (pixels > 0) * np.array([[s.pixels] for s in stats], np.float64)
    w = median_frequency(torch.from_numpy(pixels.sum(0)), torch.from_numpy(present_in.sum(0))).double().numpy()
    disagree = np.stack([s.class_disagree for s in stats])
    return (disagree * w).sum(1) / np.array([max(s.pixels, 1) for s in stats], np.float64)


def pool_scores(stats: Sequence[ImageStats]) -> dict[str, np.ndarray]:
    """Every score of every image: the means of (A1)-(A3) over its pixels and (A4)."""
    n = np.array([max(s.pixels, 1) for s in stats], np.float64)
    return {"disagreement": np.array([s.disagreement for s in stats]) / n,
            "balanced": balanced_disagreement(stats) if not math.isnan(stats[0].disagreement) else
            np.full(len(stats), math.nan),
            "kl": np.array([s.kl for s in stats]) / n,
            "entropy": np.array([s.entropy for s in stats]) / n}


# -- ranking and diversity ---------------------------------------------------------------------------
def ranking(scores: dict[str, np.ndarray], method: str, seed: int = 0) -> np.ndarray:
    """Pool indices, the best first: by the method's score, highest first (ties in pool order), or a
    seeded permutation for `random`."""
    if method not in METHODS:
        raise ValueError(f"method '{method}': one of {', '.join(METHODS)}")
    n = len(next(iter(scores.values())))
    if method == "random":
        return np.random.default_rng(seed).permutation(n)
    s = scores[method]
    if np.isnan(s).any():
        raise ValueError(f"method '{method}' needs two teachers; with one network use entropy or random")
    return np.argsort(-s, kind="stable")


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cos between the rows of `a` and of `b` (rows L2-normalised here)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(EPS)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(EPS)
    return 1.0 - a @ b.T


def diverse_picks(order: Sequence[int], scores: np.ndarray, features: np.ndarray, count: int,
                  shortlist: int = SHORTLIST) -> list[int]:
    """Greedy over the `shortlist * count` best-ranked images: the best first, then each time the image
    with the largest score x cosine distance to its nearest pick (a score-weighted k-center), so a run
    of near-identical video frames at the top of the ranking gives one pick, not several. An exact
    duplicate of a pick (distance 0) is taken only when nothing else is left."""
    cand = [int(i) for i in order[:max(count, shortlist * count)]]
    picks = [cand.pop(0)]
    nearest = cosine_distances(features[cand], features[picks]).min(1) if cand else np.zeros(0)
    while len(picks) < count and cand:
        gain = np.clip(scores[cand], EPS, None) * np.clip(nearest, 0, None)
        j = int(np.argmax(gain))  # all zero (only duplicates left): the best-ranked of them
        picks.append(cand.pop(j))
        nearest = np.minimum(np.delete(nearest, j), cosine_distances(features[cand], features[[picks[-1]]])[:, 0])
    return picks


def cluster_picks(scores: np.ndarray, features: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """Representative picks: the whole pool's descriptors in `count` k-means clusters (OpenCV's
    k-means++, seeded, cosine geometry through L2-normalised rows), and from each cluster the image its
    score ranks highest; the picks in score order. The clusters follow the pool's density, so a
    recording holding half of the pool gets about half of the picks, each the image the teachers find
    hardest in its part of the pool, and no two picks share a cluster (a run of neighbouring frames
    gives at most one). The cluster-then-uncertainty recipe of Citovsky et al. (2021, cluster-margin)
    and TypiClust (Hacohen et al. 2022): the shortlist's k-center can fill every pick from the one
    condition the teachers find hardest (docs/labelling.md)."""
    x = features / np.linalg.norm(features, axis=1, keepdims=True).clip(EPS)
    k = min(count, len(x))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, KMEANS_ITERS, 1e-6)
    _, labels, _ = cv2.kmeans(x.astype(np.float32), k, None, criteria, KMEANS_ATTEMPTS, cv2.KMEANS_PP_CENTERS)
    labels = labels[:, 0]
    picks = [int(np.flatnonzero(labels == c)[np.argmax(scores[labels == c])]) for c in np.unique(labels)]
    # duplicates can leave a cluster empty: the rest by score
    picks += [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in picks][:count - len(picks)]
    return sorted(picks, key=lambda i: (-scores[i], i))


def median_nearest(features: np.ndarray, chunk: int = 1024) -> float:
    """The median over the rows of the cosine distance to the nearest other row (in chunks of rows:
    memory chunk x N): how far apart neighbouring frames of the pool are."""
    if len(features) < 2:
        return math.nan
    out = np.empty(len(features))
    for i in range(0, len(features), chunk):
        d = cosine_distances(features[i:i + chunk], features)
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf
        out[i:i + chunk] = d.min(1)
    return float(np.median(out))


def closest_pair(features: np.ndarray) -> float:
    """The smallest cosine distance between two of the rows: how near-duplicate the closest picks are."""
    if len(features) < 2:
        return math.nan
    d = cosine_distances(features, features)
    return float(d[np.triu_indices(len(d), 1)].min())


# -- the pool pass ---------------------------------------------------------------------------------
@dataclass
class PoolResult:
    ids: list[str]
    stats: list[ImageStats]
    features: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def pooled_features(features: torch.Tensor) -> torch.Tensor:
    """A decoder feature map, 1 x D x h x w, pooled to a FEATURE_GRID^2 grid and flattened: 1 x D*grid^2."""
    return F.adaptive_avg_pool2d(features.float(), FEATURE_GRID).flatten(1)


def softmax_and_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(x)
    return out["logits"].float().softmax(1), pooled_features(out["features"])


def normalised(image: np.ndarray, mean: Sequence[float], std: Sequence[float], device) -> torch.Tensor:
    """An RGB uint8 H x W x 3 image as the network's 1 x 3 x H x W input."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).float().permute(2, 0, 1)[None] / 255
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


@torch.no_grad()
def predict_pair(networks: Sequence[torch.nn.Module], image: np.ndarray, mean, std, device
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(global softmax, local softmax or None, pooled features of every network concatenated) of one image."""
    x = normalised(image, mean, std, device)
    outs = [softmax_and_features(m, x) for m in networks]
    feats = torch.cat([f for _, f in outs], 1)
    return outs[0][0].cpu(), (outs[1][0].cpu() if len(outs) > 1 else None), feats.cpu()


def score_pool(networks: Sequence[torch.nn.Module], pool, mean, std, device="cpu",
               progress: Callable[[int], None] | None = None) -> PoolResult:
    """Stream the pool (a SegDataset) through one or two networks; every image's statistics and features."""
    if len(pool) == 0:
        raise ValueError("the unlabelled pool is empty")
    classes = len(pool.classes)
    stats, feats = [], []
    for i in range(len(pool)):
        p_g, p_l, f = predict_pair(networks, pool.load_image(i), mean, std, device)
        stats.append(image_stats(p_g, p_l, classes))
        feats.append(f[0].numpy())
        if progress:
            progress(i)
    result = PoolResult(list(pool.ids), stats, np.stack(feats))
    result.scores = pool_scores(stats)
    return result


def suggest(result: PoolResult, count: int, method: str, diverse: bool, shortlist: int = SHORTLIST,
            seed: int = 0, diversity: str = "kcenter") -> tuple[list[int], np.ndarray]:
    """(picked pool indices in order, the full ranking). `diversity`: see DIVERSITY."""
    if not 0 < count <= len(result.ids):
        raise ValueError(f"--count {count}: the pool holds {len(result.ids)} images; ask for 1 to {len(result.ids)}")
    if diversity not in DIVERSITY:
        raise ValueError(f"diversity '{diversity}': one of {', '.join(DIVERSITY)}")
    order = ranking(result.scores, method, seed)
    if not diverse or method == "random":
        return [int(i) for i in order[:count]], order
    if diversity == "clusters":
        return cluster_picks(result.scores[method], result.features, count, seed), order
    return diverse_picks(order, result.scores[method], result.features, count, shortlist), order


def top_pair_text(stats: ImageStats, classes: Sequence[str]) -> str:
    """'fence/tree 3.1%': the (global, local) class pair the teachers disagree on most, and its pixel share."""
    if stats.top_pair is None:
        return ""
    g, l, share = stats.top_pair
    return f"{classes[g]}/{classes[l]} {100 * share:.1f}%"


def scores_table(result: PoolResult, order: np.ndarray, picks: Iterable[int], classes: Sequence[str]) -> str:
    """scores.csv: every pool image in ranking order with its rank, whether picked, every score and
    the class pair its teachers disagree on most."""
    import csv
    import io

    chosen = set(picks)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "id", "picked", *SCORES, "most_disagreed (global/local share)"])
    for rank, i in enumerate(order, 1):
        s = result.stats[i]
        w.writerow([rank, result.ids[i], int(i in chosen),
                    *("" if math.isnan(result.scores[k][i]) else f"{result.scores[k][i]:.6g}" for k in SCORES),
                    top_pair_text(s, classes)])
    return buf.getvalue()


# -- the contact sheet -------------------------------------------------------------------------------
HEAT_SCALE = 2.0  # nats of (A2) (or of (A3) for one network) drawn at full heat: one scale for every row


def heat_tile(image: np.ndarray, heat: np.ndarray, scale: float = HEAT_SCALE) -> np.ndarray:
    """The image dimmed to grey with `heat` (H x W, 0..scale) drawn over it in the inferno colour map."""
    import cv2

    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) // 2, cv2.COLOR_GRAY2RGB)
    level = np.clip(heat / scale, 0, 1)
    colour = cv2.cvtColor(cv2.applyColorMap((255 * level).astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    a = level[..., None] ** 0.5  # faint heat stays visible
    return (grey * (1 - a) + colour * a).astype(np.uint8)


def sheet_row(rank: int, ident: str, image: np.ndarray, p_global: torch.Tensor, p_local: torch.Tensor | None,
              stats: ImageStats, classes: Sequence[str], palette: np.ndarray, width: int) -> list[np.ndarray]:
    """One pick's tiles: the image; the global and the local teacher's labels; their disagreement heat
    (A2) with its share and the class pair most disagreed on. One network: image, labels, entropy (A3)."""
    from igldt.figures import caption, fit_width
    from igldt.palette import colorize

    tiles = [caption(fit_width(image, width), f"#{rank} {ident}")]
    labels = [p_global] + ([] if p_local is None else [p_local])
    tiles += [fit_width(colorize(p[0].argmax(0).numpy(), palette), width, labels=True) for p in labels]
    if p_local is None:
        heat, text = entropy_map(p_global)[0].numpy(), f"entropy {stats.entropy / max(stats.pixels, 1):.3f}"
    else:
        heat = symmetric_kl_map(p_global, p_local)[0].numpy()
        text = f"disagree {100 * stats.disagreement / max(stats.pixels, 1):.1f}%  {top_pair_text(stats, classes)}"
    tiles.append(caption(fit_width(heat_tile(image, heat), width), text))
    return tiles


def draw_sheet(rows: Sequence[list[np.ndarray]], two: bool, classes: Sequence[str], palette, width: int) -> np.ndarray:
    """The contact sheet: one row per pick (`sheet_row`), titles, a legend of the class colours."""
    from igldt.figures import PAD, draw_grid, legend

    titles = (("image", "global teacher", "local teacher", "disagreement (symmetric KL)") if two
              else ("image", "prediction", "entropy"))
    return draw_grid(titles, rows, legend(classes, palette, len(titles) * width + (len(titles) - 1) * PAD, extra=()),
                     width)
