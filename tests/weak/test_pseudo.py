import pytest
import torch

from segweak.errors import SegweakError
from segweak.weak.pseudo import IGNORE, assign_sinkhorn, assign_topk, proportion_quotas, sinkhorn_log_plan

ASSIGNERS = [assign_topk, assign_sinkhorn]


def _greedy_reference(scores, p, inside):
    """The sequential definition: pairs by decreasing score (ties: pixel, then class), quota permitting."""
    k, n = scores.shape
    quota = proportion_quotas(p[None], inside.sum()[None])[0].tolist()
    labels = [IGNORE] * n
    pairs = sorted((-float(scores[c, i]), i, c) for c in range(k) for i in range(n) if inside[i])
    for _, i, c in pairs:
        if labels[i] == IGNORE and quota[c] > 0:
            labels[i] = c
            quota[c] -= 1
    return torch.tensor(labels)


def _random_case(g, b=3, k=4, h=6, w=7, absent=True):
    q = torch.softmax(2 * torch.randn(b, k, h, w, generator=g), 1)
    p = torch.rand(b, k, generator=g)
    if absent:
        p[:, -1] = 0.0
    return q, p / p.sum(1, keepdim=True)


def _counts(labels, k):
    return torch.stack([(labels.flatten(1) == c).sum(1) for c in range(k)], 1)


def test_quotas_largest_remainder_by_hand():
    # 7·[.5, .3, .2] = [3.5, 2.1, 1.4]: floors [3, 2, 1], one pixel left -> largest remainder (class 0)
    assert proportion_quotas(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([7])).tolist() == [[4, 2, 1]]
    # tie on the remainders -> lower class index; absent class never gets a pixel
    assert proportion_quotas(torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([3])).tolist() == [[2, 1, 0]]
    # unnormalised and NaN rows: renormalised / no quota at all
    q = proportion_quotas(torch.tensor([[2.0, 2.0, 0.0], [float("nan")] * 3]), torch.tensor([4, 5]))
    assert q.tolist() == [[2, 2, 0], [0, 0, 0]]


def test_quotas_sum_to_n_and_are_within_one_of_p_times_n():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(200, 6, generator=g) * (torch.rand(200, 6, generator=g) > 0.3)
    p[:, 0] += 1e-3
    p = p / p.sum(1, keepdim=True)
    n = torch.randint(1, 70000, (200,), generator=g)
    quota = proportion_quotas(p, n)
    assert torch.equal(quota.sum(1), n)
    assert ((quota - p.double() * n[:, None]).abs() < 1).all()
    assert (quota[p == 0] == 0).all()


def test_topk_equals_the_sequential_greedy_definition():
    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        k, n = int(torch.randint(2, 5, (1,), generator=g)), int(torch.randint(1, 25, (1,), generator=g))
        scores = torch.rand(k, n, generator=g)
        if trial % 2:  # many exact ties, as saturated softmax outputs have
            scores = (scores * 3).round() / 3
        p = torch.rand(k, generator=g) * (torch.rand(k, generator=g) > 0.3)
        p[trial % k] += 0.1
        inside = torch.rand(n, generator=g) > 0.2
        got = assign_topk(scores, p, inside)
        assert torch.equal(got, _greedy_reference(scores, p / p.sum(), inside)), trial


@pytest.mark.parametrize("assign", ASSIGNERS)
def test_counts_are_the_quotas_and_absent_classes_never_assigned(assign):
    g = torch.Generator().manual_seed(2)
    q, p = _random_case(g)
    labels = assign(q, p)
    assert labels.shape == (3, 6, 7) and labels.dtype == torch.int64
    assert torch.equal(_counts(labels, 4), proportion_quotas(p, torch.full((3,), 42)))
    assert not (labels == 3).any() and not (labels == IGNORE).any()
    assert torch.equal(labels, assign(q, p))  # deterministic


@pytest.mark.parametrize("assign", ASSIGNERS)
def test_confident_teacher_consistent_with_p_is_returned_unchanged(assign):
    g = torch.Generator().manual_seed(3)
    truth = torch.randint(0, 3, (2, 8, 8), generator=g)  # class 3 absent
    p = _counts(truth, 4).float() / 64
    logits = 8.0 * torch.nn.functional.one_hot(truth, 4).permute(0, 3, 1, 2) + torch.randn(
        2, 4, 8, 8, generator=g
    )
    assert torch.equal(assign(torch.softmax(logits, 1), p), truth)


@pytest.mark.parametrize("assign", ASSIGNERS)
def test_area_mask_batch_and_flat_inputs(assign):
    g = torch.Generator().manual_seed(4)
    q, p = _random_case(g)
    area = torch.rand(3, 6, 7, generator=g) > 0.3
    area[2] = False  # empty area: nothing to label
    labels = assign(q, p, area)
    assert (labels[~area] == IGNORE).all() and (labels[area] != IGNORE).all()
    assert torch.equal(_counts(labels, 4), proportion_quotas(p, area.flatten(1).sum(1)))
    for b in range(3):  # batched = one patch at a time = (K, N) form
        assert torch.equal(labels[b : b + 1], assign(q[b : b + 1], p[b : b + 1], area[b : b + 1]))
        flat = assign(q[b].flatten(1), p[b], area[b].flatten())
        assert torch.equal(flat, labels[b].flatten())


@pytest.mark.parametrize("assign", ASSIGNERS)
def test_patch_with_zero_proportions_gets_no_labels(assign):
    g = torch.Generator().manual_seed(5)
    q, p = _random_case(g, b=2)
    p[1] = 0.0
    labels = assign(q, p)
    assert (labels[1] == IGNORE).all() and (labels[0] != IGNORE).all()


@pytest.mark.parametrize("assign", ASSIGNERS)
def test_keep_fraction_most_confident_per_class(assign):
    g = torch.Generator().manual_seed(6)
    q, p = _random_case(g, b=2, h=10, w=10)
    full = assign(q, p)
    labels = assign(q, p, keep=0.3)
    kept = labels != IGNORE
    assert kept.flatten(1).sum(1).tolist() == [30, 30]
    assert torch.equal(labels[kept], full[kept])  # same decisions, fewer of them
    assert torch.equal(
        _counts(labels, 4), proportion_quotas(_counts(full, 4).float(), torch.tensor([30, 30]))
    )
    if assign is assign_topk:  # confidence = the teacher's probability of the assigned class
        conf = q.gather(1, full[:, None]).squeeze(1)
        for b in range(2):
            for c in range(3):
                in_c = full[b] == c
                kept_c, dropped_c = conf[b][in_c & kept[b]], conf[b][in_c & ~kept[b]]
                if len(kept_c) and len(dropped_c):
                    assert kept_c.min() >= dropped_c.max()


def test_invalid_options():
    q, p = torch.rand(2, 5), torch.tensor([0.5, 0.5])
    for bad in (0.0, 1.5):
        with pytest.raises(SegweakError, match="keep"):
            assign_topk(q, p, keep=bad)
    with pytest.raises(SegweakError, match="n_iter"):
        assign_sinkhorn(q, p, n_iter=0)
    with pytest.raises(SegweakError, match="epsilon"):
        assign_sinkhorn(q, p, epsilon=0.0)
    with pytest.raises(ValueError, match=r"\(K,\)"):
        assign_topk(q, torch.tensor([[0.5, 0.5]]))


def test_sinkhorn_plan_marginals():
    g = torch.Generator().manual_seed(7)
    log_q = torch.log_softmax(3 * torch.randn(2, 4, 50, generator=g), 1)
    inside = torch.rand(2, 50, generator=g) > 0.2
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.0, 0.6, 0.3]])
    quota = proportion_quotas(p, inside.sum(1))
    plan = sinkhorn_log_plan(log_q, quota, inside, n_iter=200, epsilon=1.0)
    assert not plan.isnan().any()
    assert (plan.masked_select(~inside[:, None, :]) == float("-inf")).all()
    assert (plan[quota == 0] == float("-inf")).all()
    mass = plan.exp()
    torch.testing.assert_close(mass.sum(2), quota.float(), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(mass.sum(1)[inside], torch.ones(int(inside.sum())), atol=1e-4, rtol=0)


def test_sinkhorn_follows_relative_preferences_where_topk_follows_raw_confidence():
    # Columns are pixels A, B, C, D; p asks for two pixels of class 0 and two of class 1. Top-k hands
    # class 0 to its most confident pixels (D, C) first; the plan (ε = 1) re-weights every pixel's
    # posterior by the same class weights, so class 1 goes to the largest ratios q_1 / q_0 (B, C).
    q = torch.tensor([[0.50, 0.60, 0.90, 0.95], [0.05, 0.40, 0.10, 0.05], [0.45, 0.00, 0.00, 0.00]])
    p = torch.tensor([0.5, 0.5, 0.0])
    assert assign_topk(q, p).tolist() == [1, 1, 0, 0]
    assert assign_sinkhorn(q, p, n_iter=200).tolist() == [0, 1, 1, 0]
