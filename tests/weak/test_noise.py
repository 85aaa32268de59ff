"""Weak-label noise: the generator's statistics, its per-label determinism, config and where it applies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segweak.config import NoiseConfig, TrainConfig, load_config, noise_config
from segweak.data.dataset import SegweakDataset
from segweak.errors import SegweakError
from segweak.methods import build_method, check_config
from segweak.train.datamodule import SegDataModule
from segweak.weak.labels import proportions
from segweak.weak.noise import BAG_DOMAIN, bag_key, corrupt, summary

P = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
N = 20_000


def _rows(p: np.ndarray = P, n: int = N) -> np.ndarray:
    return np.tile(p, (n, 1))


def test_dirichlet_mean_is_p_and_variance_is_the_dirichlets():
    for kappa in (5.0, 50.0):
        noisy = corrupt(_rows(), np.arange(N), "dirichlet", concentration=kappa, seed=3)
        # E[p'] = p; the standard error of the mean is <= 0.5 / sqrt(6 N) ~ 0.0015 here.
        np.testing.assert_allclose(noisy.mean(axis=0), P, atol=0.006)
        # Var[p'_c] = p_c (1 - p_c) / (kappa + 1): the draws are Dirichlet(kappa p), not some other spread.
        np.testing.assert_allclose(noisy.var(axis=0)[:4], (P * (1 - P) / (kappa + 1))[:4], rtol=0.1)


@pytest.mark.parametrize(
    ("model", "kw"), [("dirichlet", {"concentration": 2.0}), ("relative", {"sigma": 1.0})]
)
def test_rows_sum_to_one_absent_classes_stay_absent_and_unlabelled_rows_stay_nan(model, kw):
    props = proportions(np.array([[5, 3, 0, 2], [0, 0, 0, 0], [0, 7, 0, 0], [1, 1, 1, 1]]))
    noisy = corrupt(props, [4, 9, 2, 11], model, **kw)
    assert np.isnan(noisy[1]).all()
    labelled = noisy[[0, 2, 3]]
    np.testing.assert_allclose(labelled.sum(axis=1), 1.0, atol=1e-12)
    assert (labelled[props[[0, 2, 3]] == 0] == 0).all() and (labelled >= 0).all()
    assert noisy[2].tolist() == [0.0, 1.0, 0.0, 0.0]  # one present class: nothing to move
    assert not np.allclose(noisy[[0, 3]], props[[0, 3]])


def test_tiny_concentration_never_gives_nan_rows():
    # kappa * p_c far below 1: plain Gamma(alpha) draws would underflow every component to 0.
    noisy = corrupt(_rows(n=2000), np.arange(2000), "dirichlet", concentration=1e-3)
    assert np.isfinite(noisy).all()
    np.testing.assert_allclose(noisy.sum(axis=1), 1.0, atol=1e-12)


def test_same_seed_same_labels_other_seed_other_labels_and_rows_are_independent():
    props, keys = _rows(n=50), np.arange(100, 150)
    a = corrupt(props, keys, "dirichlet", concentration=20.0, seed=1)
    assert np.array_equal(a, corrupt(props, keys, "dirichlet", concentration=20.0, seed=1))
    assert not np.allclose(a, corrupt(props, keys, "dirichlet", concentration=20.0, seed=2))
    assert not np.allclose(
        a, corrupt(props, keys, "dirichlet", concentration=20.0, seed=1, domain=BAG_DOMAIN)
    )
    # A row's noise depends on its key, not on which other rows are corrupted with it (nested subsets).
    assert np.array_equal(
        a[10:20], corrupt(props[10:20], keys[10:20], "dirichlet", concentration=20.0, seed=1)
    )
    assert np.array_equal(a[::-1], corrupt(props[::-1], keys[::-1], "dirichlet", concentration=20.0, seed=1))


def test_relative_error_grows_with_sigma_and_its_renormalisation_bias():
    maes = [
        summary(_rows(), corrupt(_rows(), np.arange(N), "relative", sigma=s))["mae"]
        for s in (0.0, 0.1, 0.3, 1.0)
    ]
    assert maes[0] < 1e-12 and maes == sorted(maes) and maes[1] > 0.01
    # The documented bias: renormalising pulls a dominant share down, a minor share up.
    two = _rows(np.array([0.9, 0.1]), n=5000)
    mean = corrupt(two, np.arange(5000), "relative", sigma=0.5).mean(axis=0)
    assert 0.87 < mean[0] < 0.89 and 0.11 < mean[1] < 0.13


def test_none_is_an_exact_copy_and_bad_arguments_are_refused():
    props = _rows(n=3)
    assert np.array_equal(corrupt(props, [0, 1, 2], "none"), props)
    for kwargs in (
        {"model": "gauss"},
        {"model": "dirichlet", "concentration": 0.0},
        {"model": "relative", "sigma": -1},
    ):
        with pytest.raises(ValueError):
            corrupt(props, [0, 1, 2], **kwargs)
    with pytest.raises(ValueError):
        corrupt(props, [0, -1, 2], "relative")


def test_summary_of_known_labels():
    clean = np.array([[0.5, 0.5, 0.0], [np.nan] * 3, [1.0, 0.0, 0.0]])
    noisy = np.array([[0.7, 0.3, 0.0], [np.nan] * 3, [0.9, 0.0, 0.1]])
    s = summary(clean, noisy)
    assert s["n_labels"] == 2 and s["presence_changed"] == 1
    assert s["mae"] == pytest.approx(0.6 / 6) and s["max_abs_error"] == pytest.approx(0.2)
    assert s["mean_l1"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["weak.noise.model=gauss"], "weak.noise.model: 'gauss' is not valid"),
        (
            ["weak.noise.model=dirichlet", "weak.noise.concentration=0"],
            "weak.noise.concentration must be > 0",
        ),
        (["weak.noise.sigma=-0.1"], "weak.noise.sigma must be >= 0"),
        (["weak.noise.seed=-1"], "weak.noise.seed must be an integer >= 0"),
    ],
)
def test_config_errors_name_the_key(sets, match):
    cfg = load_config(TrainConfig, None, ["data.store=s", *sets])
    with pytest.raises(SegweakError, match=match):
        cfg.validate()


def test_config_parsing():
    with pytest.raises(SegweakError, match=r"weak\.noise\.kappa"):
        load_config(TrainConfig, None, ["weak.noise.kappa=3"])
    cfg = load_config(
        TrainConfig, None, ["data.store=s", "weak.noise.model=relative", "weak.noise.sigma=0.3"]
    )
    assert cfg.validate().weak.noise == NoiseConfig(model="relative", sigma=0.3)
    assert TrainConfig().weak.noise.model == "none"
    assert noise_config("{model: dirichlet, concentration: 5}") == NoiseConfig("dirichlet", 5.0)
    with pytest.raises(SegweakError, match=r"--noise\.concentration must be > 0"):
        noise_config("{model: dirichlet, concentration: -5}")


def test_bag_labels_get_one_noisy_label_per_bag_keyed_by_its_id(tiny_store: Path):
    weak = SegweakDataset(tiny_store, "default", "weak").indices.tolist()
    bags = [
        {"id": "field-a", "patches": weak[:3], "proportions": [0.4, 0.3, 0.2, 0.1, 0.0]},
        {"id": "field-b", "patches": weak[3:5], "proportions": [0.0, 0.5, 0.5, 0.0, 0.0]},
    ]
    noise = NoiseConfig("dirichlet", concentration=10.0, seed=4)
    ds = SegweakDataset(tiny_store, "default", "weak", weak_set={"bags": bags}, noise=noise)
    rows = {b: ds.weak[ds.bags == b] for b in (0, 1)}
    assert all((r == r[0]).all() for r in rows.values())  # all patches of a bag share its label
    expected = corrupt(
        np.array([b["proportions"] for b in bags]),
        [bag_key(b["id"]) for b in bags],
        "dirichlet",
        concentration=10.0,
        seed=4,
        domain=BAG_DOMAIN,
    )
    np.testing.assert_allclose(rows[0][0], expected[0], rtol=1e-6)
    assert rows[1][0][[0, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(ds.clean_weak[ds.bags == 0][0], bags[0]["proportions"], rtol=1e-6)
    # The same bag in another file position gets the same label.
    swapped = SegweakDataset(tiny_store, "default", "weak", weak_set={"bags": bags[::-1]}, noise=noise)
    np.testing.assert_array_equal(swapped.weak[swapped.bags == 1][0], rows[0][0])


def _datamodule(store: Path, *sets: str, method: str = "proportion") -> SegDataModule:
    cfg = check_config(
        load_config(
            TrainConfig, None, [f"data.store={store}", f"method={method}", "data.batch_size=8", *sets]
        )
    )
    dm = SegDataModule(cfg, build_method(cfg, 6).needs())
    dm.setup("fit")
    return dm


NOISY = ["weak.noise.model=dirichlet", "weak.noise.concentration=5"]


def test_datamodule_trains_on_fixed_noisy_labels_and_validates_on_clean_ones(tiny_store: Path):
    dm = _datamodule(tiny_store, *NOISY)
    train = dm.train_datasets["weak"]
    clean = proportions(dm.store.counts[train.indices])
    assert not np.allclose(train.weak, clean, atol=1e-3)
    np.testing.assert_allclose(train.clean_weak, clean, rtol=1e-6)
    np.testing.assert_allclose(train.weak.sum(axis=1), 1.0, atol=1e-5)
    noisy = corrupt(clean, train.indices, "dirichlet", concentration=5.0)  # keyed by store patch index
    np.testing.assert_array_equal(train.weak, noisy.astype(np.float32))
    assert np.array_equal(train.presence, (noisy > 0).astype(np.float32))  # presence of the noisy label
    val = dm.val_dataset
    np.testing.assert_array_equal(val.weak, proportions(dm.store.counts[val.indices]).astype(np.float32))
    # Every epoch (and a fresh datamodule: another rank, a resume) serves each patch the same label.
    seen: dict[int, list] = {}
    for epoch in range(2):
        dm.reseed_epoch(epoch)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            for index, weak in zip(batch["index"].tolist(), batch["weak"], strict=True):
                seen.setdefault(index, []).append(weak)
    assert any(len(v) == 2 for v in seen.values())
    assert all(all(np.array_equal(v[0], w) for w in v) for v in seen.values())
    np.testing.assert_array_equal(_datamodule(tiny_store, *NOISY).train_datasets["weak"].weak, train.weak)
    reseeded = _datamodule(tiny_store, *NOISY, "weak.noise.seed=1").train_datasets["weak"].weak
    assert not np.array_equal(reseeded, train.weak)
    # Without noise the labels are exactly the computed ones (float32 of the float64 proportions).
    plain = _datamodule(tiny_store).train_datasets["weak"]
    np.testing.assert_array_equal(plain.weak, clean.astype(np.float32))


def test_shuffled_control_permutes_the_noisy_labels(tiny_store: Path):
    from segweak.methods.shuffled import shuffled_labels

    noise = NoiseConfig("relative", sigma=0.5)
    noisy = SegweakDataset(tiny_store, "default", "weak", noise=noise).weak
    labels = shuffled_labels(tiny_store, "default", 7, noise)
    rows = {tuple(r) for r in noisy.tolist()}
    assert {tuple(r) for r in labels["weak"].tolist()} == rows
    assert not np.allclose(labels["weak"], shuffled_labels(tiny_store, "default", 7)["weak"], atol=1e-4)


def test_tiny_run_records_the_noise_in_metrics(tiny_store: Path, tmp_path: Path):
    from segweak.train.engine import train

    sets = [
        f"data.store={tiny_store}",
        f"out_dir={tmp_path}",
        "model.encoder=tu-test_efficientnet",
        "model.weights=none",
        "trainer.progress_bar=false",
        "method=proportion",
        "trainer.max_steps=2",
        "data.batch_size=4",
        "weak.noise.model=relative",
        "weak.noise.sigma=0.4",
        "weak.noise.seed=5",
    ]
    metrics = train(load_config(TrainConfig, None, sets))
    noise = json.loads((tmp_path / "proportion-seed0" / "metrics.json").read_text())["weak_labels"]["noise"]
    assert noise == metrics["weak_labels"]["noise"]
    assert {k: noise[k] for k in ("model", "sigma", "seed")} == {"model": "relative", "sigma": 0.4, "seed": 5}
    weak = SegweakDataset(tiny_store, "default", "weak")
    assert noise["n_labels"] == len(weak) and 0.0 < noise["mae"] < noise["max_abs_error"] <= 1.0
    clean = weak.weak.astype(np.float64)
    expected = corrupt(clean, weak.indices, "relative", sigma=0.4, seed=5)
    assert noise["mae"] == pytest.approx(float(np.abs(expected - clean).mean()), rel=1e-4)
    plain = train(load_config(TrainConfig, None, [*sets[:-3], "run_name=plain"]))
    assert plain["weak_labels"]["noise"] == {"model": "none"}
