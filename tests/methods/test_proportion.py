"""The weak-label pre-training methods (proportion family) and their pooling helpers."""

import pytest
import torch

from segweak.config import TrainConfig, WeakConfig
from segweak.errors import SegweakError
from segweak.methods import METHODS as REGISTRY
from segweak.methods import Need, build_method
from segweak.weak.pooling import hard_proportions, lse_pool, max_pool, soft_proportions

K = 4
FAMILY = ["proportion", "presence_lse", "proportion_presence", "proportion_entropy"]
METHODS = [*FAMILY, "interval"]


def make(name: str, area: str = "valid", **options):
    """Build method ``name`` with ``weak.area`` and its options (as ``methods.<name>``)."""
    cfg = TrainConfig(method=name, weak=WeakConfig(area=area), methods={name: options})
    return build_method(cfg, K)


def loss_of(method, logits, batch):
    """Sum of the method's weak terms (what the task optimises)."""
    return sum(method.weak_terms(logits, batch).values())


def _batch(b=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, K, h, w, generator=g)
    weak = torch.softmax(torch.randn(b, K, generator=g) * 2, 1)
    weak[0, 3] = 0.0
    weak[0] /= weak[0].sum()
    presence = (weak > 0).float()
    valid = torch.ones(b, h, w)
    valid[:, :2] = 0.0
    return logits, {"weak": weak, "presence": presence, "valid": valid}


def test_registry_has_the_documented_methods():
    assert set(METHODS) <= set(REGISTRY)
    assert all(REGISTRY[m].pretrain for m in METHODS)
    assert all(make(m).needs() == {"weak": Need(subset="weak", labels="weak")} for m in METHODS)


def test_unknown_method_and_loss_raise():
    with pytest.raises(SegweakError, match="unknown training method 'nope'; valid: .*proportion"):
        make("nope")
    with pytest.raises(
        SegweakError, match="methods.proportion.loss: 'nope' is not valid; choose one of ce, kl"
    ):
        make("proportion", loss="nope")
    with pytest.raises(SegweakError, match="methods.proportion_presence.presence_pooling.*lse or max"):
        make("proportion_presence", presence_pooling="mean")
    with pytest.raises(SegweakError, match="methods.presence_lse.lse_r must be > 0"):
        make("presence_lse", lse_r=0.0)


@pytest.mark.parametrize("name", METHODS)
def test_shapes_sum_to_one_and_finite_gradients(name):
    method = make(name)
    assert method.name == name
    logits, batch = _batch()
    logits.requires_grad_()
    p_hat = soft_proportions(logits, batch["valid"])
    assert p_hat.shape == (2, K)
    torch.testing.assert_close(p_hat.sum(1), torch.ones(2))
    loss = loss_of(method, logits, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_pixel_outside_valid_does_not_change_proportions():
    logits, batch = _batch()
    before = soft_proportions(logits, batch["valid"])
    changed = logits.clone()
    changed[:, :, 0, 0] += torch.tensor([50.0, -50.0, 3.0, 0.0])[None]  # row 0 is outside the valid area
    torch.testing.assert_close(soft_proportions(changed, batch["valid"]), before)
    # ... but it does change the whole-patch average
    assert not torch.allclose(soft_proportions(changed, None), soft_proportions(logits, None))


def test_patch_area_ignores_valid_map_and_valid_area_needs_it():
    logits, batch = _batch()
    on = make("proportion", area="valid")
    off = make("proportion", area="patch")
    expected = soft_proportions(logits, None)
    # With weak.area: patch (the default), the loss is the loss on whole-patch proportions
    from segweak.weak.losses import proportion_loss_rows

    torch.testing.assert_close(
        loss_of(off, logits, batch), proportion_loss_rows("ce")(expected, batch["weak"], 1e-6).mean()
    )
    assert not torch.allclose(loss_of(on, logits, batch), loss_of(off, logits, batch))
    no_valid = {k: v for k, v in batch.items() if k != "valid"}
    loss_of(off, logits, no_valid)  # fine: the leak-free default never needs the map
    with pytest.raises(SegweakError, match="weak.area is 'valid' but the batch has no 'valid' map"):
        loss_of(on, logits, no_valid)


@pytest.mark.parametrize("name", METHODS)
def test_patch_without_valid_pixels_is_left_out(name):
    method = make(name)
    logits, batch = _batch()
    batch["valid"][1] = 0.0
    only_first = loss_of(method, logits[:1], {k: v[:1] for k, v in batch.items()})
    batch["weak"][1] = float("nan")  # e.g. 0/0 proportions of an empty patch: must not leak in
    logits.requires_grad_()
    full = loss_of(method, logits, batch)
    torch.testing.assert_close(full, only_first)
    full.backward()
    assert torch.isfinite(logits.grad).all()
    # all-empty batch: zero loss, backward still works
    batch["valid"][:] = 0.0
    logits.grad = None
    loss = loss_of(method, logits, batch)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.isfinite(logits.grad).all()


def test_soft_and_hard_proportions_hand_example():
    # 1x2x1x2: pixel 0 prefers class 0 strongly, pixel 1 class 1 strongly
    logits = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])
    torch.testing.assert_close(soft_proportions(logits), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(
        hard_proportions(logits, torch.tensor([[[1.0, 0.0]]])), torch.tensor([[1.0, 0.0]])
    )


def test_lse_pool_between_mean_and_max():
    logits, batch = _batch()
    v = batch["valid"]
    mean = (logits * v[:, None]).sum((2, 3)) / v.sum((1, 2))[:, None]
    mx = max_pool(logits, v)
    lse = lse_pool(logits, v, 5.0)
    assert (lse >= mean - 1e-5).all() and (lse <= mx + 1e-5).all()
    # r -> 0: mean + r/2 * variance (float32 rounding limits how small r can usefully be)
    torch.testing.assert_close(lse_pool(logits, v, 1e-2), mean, atol=2e-2, rtol=0)
    torch.testing.assert_close(lse_pool(logits, v, 1e4), mx, atol=1e-2, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_training_free_logits_reduces_loss(name):
    torch.manual_seed(0)
    options = {
        "proportion_presence": {"presence_weight": 0.5},
        "proportion_entropy": {"entropy_weight": 0.05},
    }
    method = make(name, **options.get(name, {}))
    _, batch = _batch(b=3, h=6, w=6, seed=3)
    logits = torch.zeros(3, K, 6, 6, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    first = float(loss_of(method, logits, batch).detach())
    for _ in range(60):
        opt.zero_grad()
        loss = loss_of(method, logits, batch)
        loss.backward()
        opt.step()
    last = float(loss_of(method, logits, batch).detach())
    assert last < first * 0.8
    if name.startswith("proportion") or name == "interval":
        # predicted proportions approach the targets
        err = (soft_proportions(logits.detach(), batch["valid"]) - batch["weak"]).abs().mean()
        assert float(err) < 0.05
    else:
        # presence: a present class has a positive pooled score, an absent one a negative one
        scores = lse_pool(logits.detach(), batch["valid"], method.options.lse_r)
        assert ((scores > 0).float() == batch["presence"]).all()


def test_predicted_presence_uses_threshold():
    from segweak.metrics import SegMetrics

    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, :3] = 1.0  # 3 of 4 pixels class 0, 1 pixel class 1 (25% < 30%)
    logits[0, 1, 0, 3] = 1.0
    batch = {"mask": torch.zeros(1, 1, 4, dtype=torch.long), "weak": torch.tensor([[1.0, 0.0]])}
    batch["presence"] = torch.tensor([[1.0, 0.0]])
    for threshold, f1 in ((0.3, 1.0), (0.2, 2 / 3)):  # at 0.2 class 1 is a false positive
        metrics = SegMetrics(2)
        metrics.update(logits, batch, "patch", threshold)
        assert metrics.compute(["a", "b"])["presence_f1"] == pytest.approx(f1)


@pytest.mark.parametrize("name", ["proportion", "proportion_presence", "proportion_entropy", "interval"])
def test_proportions_alone_teach_pixel_classes(name):
    """Learning from label proportions end to end: only bag proportions supervise a 1x1-conv pixel
    classifier, yet it must label PIXELS correctly (not just match p̂ by predicting the prior).

    Regression guard for the weak path (softmax over the class dim, mean over pixels, per-patch
    targets): softmax over a spatial dim instead, for example, gives an accuracy of 0.08.
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    b, h, w = 32, 8, 8
    colours = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.5, 1.5, 0.0]])  # (K, C)
    # Bags with varied proportions: per-bag class probabilities from a peaked softmax.
    bag_probs = torch.softmax(torch.randn(b, K, generator=g) * 2.0, 1)
    labels = torch.multinomial(bag_probs, h * w, replacement=True, generator=g).view(b, h, w)
    image = colours[labels].permute(0, 3, 1, 2) + 0.5 * torch.randn(b, 3, h, w, generator=g)
    valid = torch.ones(b, h, w)
    valid[:, :, :2] = 0.0  # the weak label counts only the valid area...
    # ...and the unlabelled area looks like class 0: counting it would bias p̂_0 up by ~25 points.
    image[:, :, :, :2] = colours[0][None, :, None, None] + 0.5 * torch.randn(b, 3, h, 2, generator=g)
    counts = torch.stack([((labels == k).float() * valid).sum((1, 2)) for k in range(K)], 1)
    weak = counts / counts.sum(1, keepdim=True)
    batch = {"weak": weak, "presence": (weak > 0).float(), "valid": valid}
    model = torch.nn.Conv2d(3, K, 1)
    method = make(name, **({"tau": 0.0} if name == "interval" else {}))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss_of(method, model(image), batch).backward()
        opt.step()
    with torch.no_grad():
        pred = model(image).argmax(1)
    inside = valid > 0
    accuracy = float((pred[inside] == labels[inside]).float().mean())
    majority = float(torch.bincount(labels[inside], minlength=K).max()) / float(inside.sum())
    # Measured ~0.93 for all three methods; a collapsed (prior-only) or mis-reduced p̂ gives <= majority.
    assert majority < 0.5
    assert accuracy > 0.85
