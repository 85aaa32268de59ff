"""Training actually learns: validation mIoU after a few epochs vs the same network untrained.

Both methods start from the weights an untrained run starts from (same seed; checked at fit start) and
both are scored through the same metric path as ``metrics.json`` (``SegModule`` validation on the
``val`` subset). Tiny encoder, 32 px patches, single thread, deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from segweak.config import TrainConfig, load_config
from segweak.train.datamodule import SegDataModule
from segweak.train.engine import train
from segweak.train.module import SegModule

# Margin by which training must beat the untrained network's val mIoU. At these settings (seed 0)
# supervised goes ~0.03 -> ~0.25 and proportion ~0.03 -> ~0.22; seeds 1 and 2 keep margins >= 0.13.
MARGIN = 0.1


def _cfg(store: Path, out: Path, method: str, epochs: int, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        None,
        [
            f"data.store={store}",
            f"out_dir={out}",
            f"method={method}",
            "model.encoder=tu-test_efficientnet",
            "model.weights=none",
            "data.batch_size=4",
            f"trainer.max_epochs={epochs}",
            "trainer.progress_bar=false",
            "optim.lr=0.01",
            *extra,
        ],
    )


def _untrained(cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Val metrics and weights of the network ``train(cfg)`` starts from (seeded as the engine does)."""
    from segweak.data.store import Store

    classes = list(Store(cfg.data.store).classes)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    module = SegModule(cfg, len(classes), classes)
    state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.validate(module, datamodule=SegDataModule(cfg, module.needs), verbose=False)
    assert module.last_metrics is not None
    return module.last_metrics, state


class _CaptureStart(L.Callback):
    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def _train_from_untrained(cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    before, init = _untrained(cfg)
    capture = _CaptureStart()
    after = train(cfg, callbacks=[capture])
    # The comparison is meaningful only if training started from exactly the evaluated weights.
    assert capture.state.keys() == init.keys()
    assert all(torch.equal(capture.state[k], v) for k, v in init.items())
    return before, after


def test_supervised_beats_untrained_network(tiny_store, tmp_path):
    before, after = _train_from_untrained(_cfg(tiny_store, tmp_path, "supervised", epochs=5))
    assert after["n_pixels"] == before["n_pixels"] > 0
    assert after["miou"] > before["miou"] + MARGIN, (before["miou"], after["miou"])
    assert after["oa"] > before["oa"]


def test_proportion_learns_from_proportions_alone(tiny_store, tmp_path):
    # proportion never sees a pixel mask nor a valid map (checked in test_engine); only per-patch
    # proportions, averaged over whole patches (the leak-free default).
    before, after = _train_from_untrained(_cfg(tiny_store, tmp_path, "proportion", epochs=4))
    assert after["miou"] > before["miou"] + MARGIN, (before["miou"], after["miou"])
    assert after["prop_mae"] < before["prop_mae"], (before["prop_mae"], after["prop_mae"])
