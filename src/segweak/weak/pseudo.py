"""Proportion-guided pseudo-labels: give each pixel one class so that class counts match the weak label.

Learning from label proportions with online pseudo-labels (Matsuo et al., "Learning from label
proportion with online pseudo-label decision by regret minimization", ICASSP 2023) alternates between
training on pixel pseudo-labels and re-deciding them under the constraint that each patch's label
counts equal its proportions. This module does the decision step from a teacher's probabilities q:

* quotas: n_c = round(p_c · N) by the largest-remainder method, so Σ_c n_c = N exactly and classes
  with p_c = 0 get n_c = 0 (:func:`proportion_quotas`);
* :func:`assign_topk`: greedy assignment of (pixel, class) pairs by decreasing teacher score, a pair
  being accepted while its pixel is free and its class has quota left;
* :func:`assign_sinkhorn`: entropic optimal transport between pixels (mass 1 each) and classes (mass
  n_c) on the cost −log q, then the same greedy pass on the transport plan to get exact counts.

Both return int64 labels with :data:`IGNORE` (255) outside the area and, with ``keep < 1``, on the
pixels that were not among the most confident ones. They run under ``torch.no_grad`` (pseudo-labels
are targets). The greedy pass is iterative and checks convergence once per iteration, which
synchronises with the device: it is meant for a pseudo-label step, not inside a loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segweak.errors import SegweakError

IGNORE = 255
"""Label of pixels that carry no pseudo-label (outside the area, or not confident enough)."""


def proportion_quotas(p: Tensor, n: Tensor) -> Tensor:
    """Integer class counts n_c ≈ p_c · N that sum to N exactly (largest-remainder rounding).

    p is renormalised to sum to 1 (NaN counts as 0). Each class gets ⌊p_c N⌋ and the R = N − Σ_c ⌊p_c N⌋
    remaining pixels go to the R classes with the largest fractional parts (ties: lower class index).
    A class with p_c = 0 never gets a pixel; a patch whose proportions are all 0 gets no quota at all.

    Args:
        p: (B, K) proportions.
        n: (B,) integer totals N.

    Returns:
        (B, K) int64 quotas; each row sums to N (0 for a patch with all-zero proportions).
    """
    p = torch.nan_to_num(p.float(), nan=0.0).clamp_min(0.0)
    total = p.sum(dim=1, keepdim=True)
    labelled = total > 0
    p = torch.where(labelled, p / total.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(p))
    n = torch.where(labelled[:, 0], n.to(p.device, torch.int64), 0)
    raw = p * n[:, None].float()
    base = raw.floor()
    # Absent classes sort after every present one, whatever their (zero) fractional part.
    frac = torch.where(p > 0, raw - base, torch.full_like(raw, -1.0))
    rest = n - base.sum(dim=1).long()  # (B,), in [0, number of present classes]
    order = torch.sort(frac, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(p.shape[1], device=p.device).expand_as(order)
    )
    bonus = (rank < rest[:, None]) & (p > 0)
    return base.long() + bonus.long()


def _flatten(
    q: Tensor, p: Tensor, area_mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...]]:
    """(B,K,H,W) or (K,N) inputs -> q (B, K, N) float32, p (B, K), inside (B, N) bool, output shape."""
    if q.ndim == 4:
        b, k, h, w = q.shape
        out_shape: tuple[int, ...] = (b, h, w)
        if tuple(p.shape) != (b, k):
            raise ValueError(
                f"p must be (B, K) = {(b, k)} for q of shape {tuple(q.shape)}, got {tuple(p.shape)}"
            )
    elif q.ndim == 2:
        k, n = q.shape
        out_shape = (n,)
        if tuple(p.shape) != (k,):
            raise ValueError(f"p must be (K,) = {(k,)} for q of shape {tuple(q.shape)}, got {tuple(p.shape)}")
        q, p = q[None], p[None]
        area_mask = None if area_mask is None else area_mask[None]
    else:
        raise ValueError(f"q must be (B, K, H, W) or (K, N), got shape {tuple(q.shape)}")
    b, k = q.shape[:2]
    q = q.float().reshape(b, k, -1)
    if area_mask is None:
        inside = torch.ones((b, q.shape[2]), dtype=torch.bool, device=q.device)
    else:
        if area_mask.numel() != b * q.shape[2] or area_mask.shape[0] != b:
            raise ValueError(
                f"area_mask must have the pixel shape {out_shape} of q, got {tuple(area_mask.shape)}"
            )
        inside = area_mask.to(q.device).reshape(b, -1) != 0
    p = torch.nan_to_num(p.to(q.device).float(), nan=0.0)
    # A patch without a usable weak label (all-zero proportions) gets no pseudo-label at all.
    inside = inside & (p.sum(dim=1, keepdim=True) > 0)
    return q, p, inside, out_shape


def _check_keep(keep: float) -> None:
    if not 0.0 < float(keep) <= 1.0:
        raise SegweakError(f"pseudo-labels: keep must be in (0, 1] (fraction of pixels kept), got {keep}")


def _quota_greedy(scores: Tensor, quota: Tensor, inside: Tensor, keep: float) -> Tensor:
    """Exact greedy assignment with class quotas, computed as a fixed point of class thresholds.

    The sequential algorithm visits (pixel, class) pairs by decreasing score (ties: lower pixel, then
    lower class index) and accepts a pair when its pixel is unassigned and its class still has quota.
    Its result is the unique stable matching for these globally ranked pairs, which is characterised
    by one rank threshold t_c per class: pixel i gets its best class (by score) among the classes c
    for which i is among the first t_c pixels of c's score ranking. Starting from t_c = N (t_c = 0
    for n_c = 0), each round assigns every pixel to its best eligible class and lowers t_c of every
    over-full class to just after its n_c-th member; thresholds only decrease, and the fixed point
    has exactly n_c members per class (Σ_c n_c = number of pixels inside). Rounds are fully
    vectorised over the batch, classes and pixels.

    Args:
        scores: (B, K, N) float scores (higher = more likely).
        quota: (B, K) int64 class counts, Σ_c = number of inside pixels of the patch.
        inside: (B, N) bool, pixels to label.
        keep: Fraction of the inside pixels to label (the most confident per class).

    Returns:
        (B, N) int64 labels, IGNORE outside or not kept.
    """
    b, k, n = scores.shape
    dev = scores.device
    low = torch.finfo(torch.float32).min
    # Finite scores, so that -inf can mark "not eligible" below without tying with a real score.
    scores = torch.nan_to_num(scores.float(), nan=low, neginf=low)
    pixels = torch.arange(n, device=dev).expand(b, k, n)
    # Pixels of each class, best first (stable: ties in pixel order).
    by_class = torch.sort(scores, dim=2, descending=True, stable=True).indices
    rank = torch.empty_like(by_class).scatter_(2, by_class, pixels)  # rank[b, c, i] of pixel i within c
    classes = torch.arange(k, device=dev)[None, :, None]
    thr = torch.where(quota > 0, n, 0)
    # Σ thr decreases strictly in every round that is not the last one, hence at most K·N + 1 rounds.
    for _ in range(k * n + 1):
        eligible = torch.where(rank < thr[:, :, None], scores, float("-inf"))
        # Best eligible class of each pixel; max() returns the first maximal index, i.e. the lower
        # class on ties (as in the sequential order).
        choice = eligible.max(dim=1, keepdim=True).indices  # (B, 1, N)
        members = ((choice == classes) & inside[:, None, :]).gather(2, by_class)  # in class rank order
        running = members.cumsum(dim=2)  # (B, K, N) members of c among its first r+1 pixels
        over = running[:, :, -1] > quota
        cut = torch.searchsorted(running, quota[:, :, None]).squeeze(2) + 1
        new_thr = torch.where(over, cut, thr)
        if torch.equal(new_thr, thr):
            break
        thr = new_thr
    else:  # pragma: no cover - impossible by the monotonicity argument above
        raise RuntimeError("quota assignment did not converge")
    choice = choice[:, 0]
    labelled = inside
    if keep < 1.0:
        # Keep round(keep·N) pixels, split over classes by largest remainder so the kept labels keep
        # the patch's proportions; within a class, its best-ranked (most confident) members.
        n_in = inside.sum(dim=1)
        n_keep = torch.floor(keep * n_in.float() + 0.5).long()  # float32: MPS has no float64
        keep_quota = proportion_quotas(quota.float(), n_keep)
        kept_ranked = members & (running <= keep_quota[:, :, None])
        kept = torch.zeros_like(members).scatter_(2, by_class, kept_ranked)
        labelled = kept.any(dim=1)
    return torch.where(labelled, choice, torch.full_like(choice, IGNORE))


@torch.no_grad()
def assign_topk(q: Tensor, p: Tensor, area_mask: Tensor | None = None, keep: float = 1.0) -> Tensor:
    """Pseudo-labels with exact class counts by greedy top-k on the teacher's probabilities.

    Pairs (pixel i, class c) are taken by decreasing q_{c,i}; a pair is accepted while pixel i is
    unlabelled and class c has fewer than n_c pixels (n = :func:`proportion_quotas` of p over the
    area). So class counts are exactly n_c, a class with p_c = 0 is never assigned, and when the
    teacher's argmax already has counts n it is returned unchanged. Deterministic (ties: lower pixel
    index, then lower class index).

    Args:
        q: (B, K, H, W) or (K, N) teacher probabilities (any monotone score works: logits, log q).
        p: (B, K) (or (K,)) weak-label proportions.
        area_mask: (B, H, W) (or (N,)) non-zero = pixel to label; None = the whole patch.
        keep: Keep only the ``keep`` fraction most confident labels (round(keep·N) pixels, split over
            classes in proportion to their counts, most confident first within each class); the
            others are IGNORE.

    Returns:
        (B, H, W) (or (N,)) int64 labels in 0..K-1, IGNORE (255) outside the area or not kept.
    """
    _check_keep(keep)
    scores, p, inside, shape = _flatten(q, p, area_mask)
    quota = proportion_quotas(p, inside.sum(dim=1))
    return _quota_greedy(scores, quota, inside, float(keep)).reshape(shape)


def sinkhorn_log_plan(log_q: Tensor, quota: Tensor, inside: Tensor, n_iter: int, epsilon: float) -> Tensor:
    """Log of the entropic optimal-transport plan between pixels and classes.

    Minimises Σ_{i,c} π_{ic} C_{ic} − ε H(π) with C = −log q, row sums Σ_c π_{ic} = 1 (inside
    pixels) and column sums Σ_i π_{ic} = n_c, by ``n_iter`` Sinkhorn iterations in log space
    (Cuturi, NeurIPS 2013; the log-domain form of Peyré & Cuturi, "Computational Optimal Transport",
    2019, §4.4): with K_{ic} = log q_{ic} / ε,

        f_i ← −logsumexp_c (K_{ic} + g_c),   g_c ← log n_c − logsumexp_i (K_{ic} + f_i),

    and log π_{ic} = K_{ic} + f_i + g_c. The last update is on g, so class sums are exact and pixel
    sums approximate. With ε = 1, π_{ic} ∝ q_{ic} w_c: the teacher's posterior re-weighted by class
    weights w that make the expected counts equal n (a prior-shift correction).

    Args:
        log_q: (B, K, N) log teacher probabilities (finite).
        quota: (B, K) class masses n_c (0 = class absent).
        inside: (B, N) bool pixels that carry mass 1.
        n_iter: Number of iterations (≥ 1).
        epsilon: Entropic regularisation ε > 0.

    Returns:
        (B, K, N) float32 log plan; −inf for absent classes and outside pixels.
    """
    present = quota > 0
    valid = inside[:, None, :] & present[:, :, None]
    kern = log_q / epsilon
    # Two masked copies of K keep the loop free of masking: in the pixel update, outside pixels get a
    # finite dummy row (their f is never used); in the class update, outside pixels are excluded
    # (-inf) and absent classes get a finite dummy row, so that g = log 0 − finite = -inf, not NaN.
    kern_f = kern.masked_fill(~inside[:, None, :], 0.0)
    kern_g = kern.masked_fill(~inside[:, None, :], float("-inf")).masked_fill(~present[:, :, None], 0.0)
    log_n = torch.log(quota.float())[:, :, None]  # -inf for absent classes
    g = torch.where(present, 0.0, float("-inf"))[:, :, None]
    f = torch.zeros_like(kern[:, :1])
    for _ in range(n_iter):
        f = -torch.logsumexp(kern_f + g, dim=1, keepdim=True)
        g = log_n - torch.logsumexp(kern_g + f, dim=2, keepdim=True)
    return torch.where(valid, kern + f + g, float("-inf"))


@torch.no_grad()
def assign_sinkhorn(
    q: Tensor,
    p: Tensor,
    area_mask: Tensor | None = None,
    keep: float = 1.0,
    n_iter: int = 50,
    epsilon: float = 1.0,
) -> Tensor:
    """Pseudo-labels with exact class counts from an entropic optimal-transport plan.

    Runs :func:`sinkhorn_log_plan` (pixels of mass 1 to classes of mass n_c = :func:`proportion_quotas`
    of p, cost −log q), then the greedy quota pass of :func:`assign_topk` on the plan's scores log π,
    which turns the fractional plan into labels with exactly n_c pixels per class. Compared with
    :func:`assign_topk` on q, the plan first shifts every pixel's posterior by the same class weights,
    so the labels follow the teacher's *relative* preferences rather than its raw confidence (SeLa,
    Asano et al., ICLR 2020, label images the same way). ``keep`` ranks by log π within each class.

    Args:
        q: (B, K, H, W) or (K, N) teacher probabilities.
        p: (B, K) (or (K,)) weak-label proportions.
        area_mask: (B, H, W) (or (N,)) non-zero = pixel to label; None = the whole patch.
        keep: Fraction of the most confident labels kept (see :func:`assign_topk`).
        n_iter: Sinkhorn iterations (a fixed number: no convergence test, no device sync).
        epsilon: Entropic regularisation ε > 0 (smaller = closer to the unregularised transport).

    Returns:
        (B, H, W) (or (N,)) int64 labels in 0..K-1, IGNORE (255) outside the area or not kept.

    Raises:
        SegweakError: For ``keep``, ``n_iter`` or ``epsilon`` out of range.
    """
    _check_keep(keep)
    if int(n_iter) < 1:
        raise SegweakError(f"sinkhorn pseudo-labels: n_iter must be >= 1, got {n_iter}")
    if not float(epsilon) > 0.0:
        raise SegweakError(f"sinkhorn pseudo-labels: epsilon must be > 0, got {epsilon}")
    probs, p, inside, shape = _flatten(q, p, area_mask)
    quota = proportion_quotas(p, inside.sum(dim=1))
    # Clamping keeps −log q finite where the teacher's softmax underflowed to 0.
    log_q = torch.log(probs.clamp_min(torch.finfo(torch.float32).tiny))
    plan = sinkhorn_log_plan(log_q, quota, inside, int(n_iter), float(epsilon))
    return _quota_greedy(plan, quota, inside, float(keep)).reshape(shape)
