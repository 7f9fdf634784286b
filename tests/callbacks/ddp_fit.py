"""One small fit with all three callbacks at their defaults (no ``output_dir``).

``python ddp_fit.py STRATEGY OUT`` with STRATEGY ``single``, ``ddp`` or ``ddp_spawn`` (2 CPU
processes, gloo). Every rank writes ``OUT/rank<N>.pt``: what each callback found, the head the
model ends with and the callback metrics, for the tests to compare with one process.
A script, not a test: ``strategy="ddp"`` launches it again per rank, as it would a user's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, DistributedSampler

from lightning_maia._options import Output
from lightning_maia.analysis._spurious_options import Refit, SearchBudget
from lightning_maia.callbacks.misclassification_flagger import MisclassificationFlagger
from lightning_maia.callbacks.spurious_feature_remover import SpuriousFeatureRemover
from lightning_maia.callbacks.unit_interpreter import UnitInterpreter
from lightning_maia.recipes.shapes_backbone import ShapesBackbone, ShapesBackboneClassifier
from lightning_maia.world import SpuriousShapes

WIDTHS = (4, 4, 8, 8)


class Collect(Callback):
    """Saves what the other callbacks found, on every rank, when fitting ends."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        interpreter, remover, flagger = (
            next(c for c in trainer.callbacks if isinstance(c, kind))  # type: ignore[attr-defined]
            for kind in (UnitInterpreter, SpuriousFeatureRemover, MisclassificationFlagger)
        )
        found: dict[str, Any] = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "interpreter_history": interpreter.history,
            "remover_history": remover.history,
            "remover_decision": remover.decision,
            "flagger_history": flagger.history,
            "head_type": type(pl_module.head).__name__,
            "head": {
                k: v.detach().clone()
                for k, v in pl_module.head.state_dict().items()
                if isinstance(v, torch.Tensor)
            },
            "callback_metrics": {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("maia/")
            },
            "log_dir": trainer.log_dir,
        }
        torch.save(found, self.out / f"rank{trainer.global_rank}.pt")


class Data(pl.LightningDataModule):
    """Unshuffled shards: two ranks' batches of 16 average to one process's gradient on 32."""

    def __init__(self) -> None:
        super().__init__()
        self.train, self.val = SpuriousShapes("train", size=64), SpuriousShapes("val", size=32)

    def train_dataloader(self) -> DataLoader:
        if not dist.is_initialized():
            return DataLoader(self.train, batch_size=32)
        return DataLoader(
            self.train, batch_size=16, sampler=DistributedSampler(self.train, shuffle=False)
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=16)


def main(strategy: str, out: Path) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    model = ShapesBackboneClassifier(4, backbone=ShapesBackbone(WIDTHS), lr=0.05)
    distributed = strategy != "single"
    trainer = pl.Trainer(
        default_root_dir=out,
        max_epochs=1,
        accelerator="cpu",
        devices=2 if distributed else 1,
        strategy=strategy if distributed else "auto",
        logger=CSVLogger(out),
        callbacks=[
            UnitInterpreter(units=["backbone.pool:0-3"], output=Output(progress=False)),
            SpuriousFeatureRemover(
                budget=SearchBudget(k=4), refit=Refit(remedy="erase"), output=Output(progress=False)
            ),
            MisclassificationFlagger(),
            Collect(out),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=Data())


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
