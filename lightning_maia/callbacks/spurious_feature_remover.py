"""SpuriousFeatureRemover: find head inputs that carry a spurious feature, retrain without them.

MAIA's §5.1 as a callback, a thin adapter over
:func:`~lightning_maia.analysis.spurious_search.find_spurious_units` and
:func:`~lightning_maia.analysis.spurious_search.remove_spurious_units` (which audit, the
benchmarks and users without a Trainer call directly). On the head (the last ``nn.Linear``, or
``head=`` a module path) and the features it reads:

1. an L1-regularised logistic regression on the training features picks the top-``k`` units;
2. the agent runs ``spurious_check`` on each: does the unit follow the class, or a candidate
   spurious attribute (``candidate_attributes``, e.g. ``("background",)``; empty lets the agent
   find them) with the class held fixed? Verdict ``core`` / ``spurious`` / ``unclear``;
3. a remedy refits the head on the (unbalanced) training data, without group labels:
   ``select`` keeps only the units whose verdict is in ``keep``; ``erase`` projects out the
   subspace that the agent's background-only edits move the features along;
4. the new head is installed as a :class:`~lightning_maia.analysis._masked_head.MaskedHead` (the
   original kept beside it), which checkpoints keep.

The callback adds the schedule (``when``), Lightning's hooks, checkpoint state, logging and the
report. Rank zero decides; the decision (weights, mask, projection) is broadcast so every rank
installs the same head. Logged: a unit table, before/after accuracy, balanced accuracy and
worst-group accuracy where the validation data has group labels, and the HTML report.

**Why one file.** One callback per file, as in Lightning; the search and the remedies are in
:mod:`lightning_maia.analysis.spurious_search`, and what is left here is the callback's options,
hooks, state, broadcast and logging.

>>> from lightning_maia.callbacks import Refit, SearchBudget
>>> remover = SpuriousFeatureRemover(budget=SearchBudget(k=20), refit=Refit(remedy="erase"))
>>> remover.state_key
"SpuriousFeatureRemover{'head': None, 'k': 20, 'remedy': 'erase'}"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_maia._options import Backends, Output
from lightning_maia.agents._agent_resolution import (
    ResolvedExperiments,
    resolve_agent,
    resolve_backends,
)
from lightning_maia.agents.tasks import Agent
from lightning_maia.analysis._masked_head import (
    MaskedHead,
    find_head,
    fold_masked_heads,
    reinstall_masked_heads,
)
from lightning_maia.analysis._spurious import UnitJudgement
from lightning_maia.analysis.spurious_search import (
    Refit,
    SearchBudget,
    class_names_of,
    find_spurious_units,
    install_decision,
    locate_feature_layer,
    remove_spurious_units,
    unit_table,
)
from lightning_maia.callbacks._checkpoints import forget_optimizer_state, refresh_checkpoints
from lightning_maia.callbacks._experiment_setup import train_dataset_at_setup
from lightning_maia.callbacks._shared import (
    finished_epoch,
    log_figures,
    output_root,
    should_skip,
    train_dataset,
    validation_dataset,
)
from lightning_maia.errors import ConfigurationError, MaiaError, bad_option
from lightning_maia.exemplars import compute_exemplars
from lightning_maia.reporting._adapters import LoggerAdapter, adapters_for
from lightning_maia.reporting._html_report import sections_from_toolbox, write_report
from lightning_maia.subject import Preprocess
from lightning_maia.units import find_layer

WHEN = ("fit_end", "epoch")
_OWNER = "SpuriousFeatureRemover"


class SpuriousFeatureRemover(Callback):
    """Judge the head's top input units with the agent and refit the head without spurious ones.

    Args:
        head: module path of the classifier head (default: the last ``nn.Linear``).
        feature_layer: module whose output the head reads (default: found by one forward;
            a conv layer whose spatial mean is the head's input counts too).
        class_names: the classes, in output order (default: the module's ``class_names``, else
            the training dataset's).
        candidate_attributes: attributes that may be spurious; empty: the agent finds them.
        dataset: the (unbalanced) training data for selection, exemplars and the refit
            (default: the training dataloader's dataset). Items are ``(image, label, ...)``.
        val_dataset: data for before/after figures and for choosing ``refit.copies`` among a
            list (default: the validation dataloader's).
        when: ``fit_end`` (once) or ``epoch`` (after every ``every_n_epochs`` training epochs;
            training then goes on with the masked head in place).
        every_n_epochs: the period for ``when="epoch"``.
        budget: units the L1 regression selects for judgement (``k``), exemplars per unit and
            the batch size of the feature passes (:class:`SearchBudget`).
        refit: the remedy (``select`` or ``erase``), the verdicts ``select`` keeps, the refit
            protocol, the erased share, fine-tuning epochs after a ``fit_end`` refit and the
            counterfactual copies ``select`` adds (a list: chosen on ``val_dataset`` by
            balanced accuracy over classes) (:class:`Refit`).
        backends: the agent (default: the offline :class:`ScientistAgent`), how it designs
            experiments (``designer``: ``retrieval`` for the training data's attribute columns,
            ``procedural``, ``prompts``, ``auto`` or a designer object; None: procedural for
            procedural data, and a setup error naming what to configure for data the agent
            cannot design on) and its image backends (:class:`Backends`).
        output: where the report goes (default ``<log_dir>/maia``), ``on_error`` (``warn``: a
            warning and failed reports, the head left unchanged when no verdict came back; or
            ``raise``) and progress bars (:class:`Output`).
        preprocess: the model's input transform, where the data holds display images.
        seed: seeds the L1 regression and the agent.
    """

    def __init__(
        self,
        *,
        head: str | None = None,
        feature_layer: str | None = None,
        class_names: Sequence[str] | None = None,
        candidate_attributes: Sequence[str] = ("background",),
        dataset: Dataset[Any] | None = None,
        val_dataset: Dataset[Any] | None = None,
        when: Literal["fit_end", "epoch"] = "fit_end",
        every_n_epochs: int = 1,
        budget: SearchBudget | None = None,
        refit: Refit | None = None,
        backends: Backends | None = None,
        output: Output | None = None,
        preprocess: Preprocess | None = None,
        seed: int = 0,
    ) -> None:
        if when not in WHEN:
            raise bad_option("when", " or ".join(WHEN), when)
        if isinstance(candidate_attributes, str):
            raise bad_option("candidate_attributes", "a list of attributes", candidate_attributes)
        if (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise bad_option("every_n_epochs", "a positive integer", every_n_epochs)
        for name, value, kind in (
            ("budget", budget, SearchBudget),
            ("refit", refit, Refit),
            ("backends", backends, Backends),
            ("output", output, Output),
        ):
            if value is not None and not isinstance(value, kind):
                raise bad_option(name, f"a {kind.__name__}(...) or None", value)
        self.head, self.feature_layer = head, feature_layer
        self.class_names = list(class_names) if class_names is not None else None
        self.candidate_attributes = tuple(candidate_attributes)
        self.dataset, self.val_dataset = dataset, val_dataset
        self.when, self.every_n_epochs = when, every_n_epochs
        self.budget = budget if budget is not None else SearchBudget()
        self.refit = refit if refit is not None else Refit()
        self.backends = backends if backends is not None else Backends()
        self.output = output if output is not None else Output()
        self.preprocess, self.seed = preprocess, seed
        #: The agent of the runs (a bad ``backends.agent`` fails here, at ``__init__``).
        self.agent: Agent = resolve_agent(self.backends.agent, seed)
        self._resolved: ResolvedExperiments | None = None
        #: The agent's judgements of the last run (rank zero).
        self.judgements: list[UnitJudgement] = []
        #: Figures of every run: epoch, units judged/kept, before/after metrics.
        self.history: list[dict[str, Any]] = []
        #: The last installed decision (weight, bias, mask, projection, remedy, units).
        self.decision: dict[str, Any] | None = None
        self._adapters: list[LoggerAdapter] | None = None
        self._kept: set[int] = set()
        self._root: Path | None = None
        #: The HTML report of the latest run (``<output>/spurious/report.html``).
        self.report_path: Path | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(head=self.head, k=self.budget.k, remedy=self.refit.remedy)

    # -- lifecycle --------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        find_head(pl_module, self.head)  # a bad `head` fails here, before training
        if self.feature_layer is not None:
            find_layer(pl_module, self.feature_layer)
        if self._class_names(pl_module, self.dataset) is None and self.dataset is not None:
            raise bad_option("class_names", "the class names in output order", None)
        data = self.dataset if self.dataset is not None else train_dataset_at_setup(trainer)
        self._resolve_backends(pl_module, data)  # an unusable designer fails here
        self._check_copies_data(trainer)
        # Every rank, here: under DDP the log folder is broadcast from rank zero.
        self._root = output_root(trainer, self.output.output_dir)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when != "epoch" or should_skip(trainer):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.run(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when == "fit_end" and not should_skip(trainer):
            self.run(trainer, pl_module)

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # The user's own class loads the checkpoint as it is: the masked head is saved as the
        # plain Linear with the same logits, its mask and projection beside the state dict.
        fold_masked_heads(pl_module, checkpoint)

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # fit(ckpt_path=...): the weights are loaded; training goes on under the saved mask.
        reinstall_masked_heads(pl_module, checkpoint)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "decision": self.decision}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.decision = state_dict.get("decision")

    # -- one run ----------------------------------------------------------------------------

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
        """Judge, refit and install on every rank; returns the figures (rank zero) or None."""
        train_data = self.dataset if self.dataset is not None else train_dataset(trainer)
        if train_data is None:
            rank_zero_warn("SpuriousFeatureRemover found no training data: pass `dataset=`")
            return None
        head_path, head = find_head(pl_module, self.head)
        layer, reduction = locate_feature_layer(
            pl_module, head, train_data, self.feature_layer, self.preprocess
        )
        class_names = self._class_names(pl_module, train_data)
        if class_names is None:
            raise bad_option("class_names", "the class names in output order", None)
        base = (
            self._root if self._root is not None else output_root(trainer, self.output.output_dir)
        )
        root = base / "spurious"
        if self._adapters is None:
            self._adapters = adapters_for(trainer)
        # Every rank reads its shard; the merged exemplars are the same on all ranks.
        exemplars = compute_exemplars(
            pl_module,
            train_data,
            [f"{layer}:*"],
            k=self.budget.exemplars_k,
            reduction=reduction,
            progress=False,
            preprocess=self.preprocess,
        )
        val_data = self.val_dataset if self.val_dataset is not None else validation_dataset(trainer)
        decision: dict[str, Any] | None = None
        figures: dict[str, Any] | None = None
        if trainer.is_global_zero:
            try:
                decision, figures = self._decide(
                    pl_module, layer, class_names, train_data, val_data, exemplars
                )
            except ConfigurationError:
                raise
            except (MaiaError, OSError, TimeoutError) as error:
                if self.output.on_error == "raise":
                    raise
                rank_zero_warn(f"SpuriousFeatureRemover failed; the head is unchanged: {error}")
                figures = {"status": "failed", "failure_reason": str(error)}
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision is not None:
            forget_optimizer_state(trainer, self._install(pl_module, head_path, decision))
        # Every rank keeps (and logs) the same figures, so monitors see them under DDP too.
        if figures is not None:
            figures = {k: v for k, v in figures.items() if not isinstance(v, Tensor)}
        figures = trainer.strategy.broadcast(figures, src=0)
        if figures is None:
            return None
        # At fit end, the last epoch trained (``current_epoch`` is one past it by then).
        epoch = trainer.current_epoch if self.when == "epoch" else finished_epoch(trainer)
        self.history.append({**figures, "epoch": epoch})
        self._log(trainer, pl_module, figures, root, epoch)
        if decision is not None:
            # ModelCheckpoint saved this step's files before the head changed: save them again.
            refresh_checkpoints(trainer)
        return figures if trainer.is_global_zero else None

    def apply(self, model: nn.Module, *, dataset: Dataset[Any] | None = None) -> dict[str, Any]:
        """The same judgement and remedy on a model outside a fit (e.g. a loaded checkpoint),
        in one process: installs the masked head and returns the figures (the report is
        written when ``output.output_dir`` is set)."""
        train_data = dataset if dataset is not None else self.dataset
        if train_data is None:
            raise bad_option("dataset", "the (unbalanced) training data", None)
        head_path, head = find_head(model, self.head)
        layer, reduction = locate_feature_layer(
            model, head, train_data, self.feature_layer, self.preprocess
        )
        class_names = self._class_names(model, train_data)
        if class_names is None:
            raise bad_option("class_names", "the class names in output order", None)
        exemplars = compute_exemplars(
            model, train_data, [f"{layer}:*"], k=self.budget.exemplars_k, reduction=reduction,
            progress=False, preprocess=self.preprocess,
        )  # fmt: skip
        decision, figures = self._decide(
            model, layer, class_names, train_data, self.val_dataset, exemplars
        )
        if decision is not None:
            self._install(model, head_path, decision)
        self.history.append(dict(figures))
        if self.output.output_dir is not None:
            self._write_report(Path(self.output.output_dir) / "spurious", figures, epoch=None)
        return figures

    def _install(self, model: nn.Module, path: str, decision: dict[str, Any]) -> MaskedHead:
        masked = install_decision(model, path, decision)
        self.decision = decision
        return masked

    def _decide(
        self,
        pl_module: nn.Module,
        layer: str,
        class_names: list[str],
        train_data: Dataset[Any],
        val_data: Dataset[Any] | None,
        exemplars: Any,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Rank zero's decision: the functional core's search and remedy on this model."""
        found = find_spurious_units(
            pl_module, train_data, class_names=class_names,
            candidate_attributes=self.candidate_attributes, head=self.head, feature_layer=layer,
            backends=self._resolve_backends(pl_module, train_data), budget=self.budget,
            preprocess=self.preprocess, exemplars=exemplars, seed=self.seed,
            on_error=self.output.on_error, progress=self.output.progress, warn=_warn,
        )  # fmt: skip
        self.judgements = found.judgements
        # Fine-tuning follows a fit-end refit only: per epoch, training itself goes on.
        refit = self.refit if self.when == "fit_end" else dataclasses.replace(
            self.refit, finetune_epochs=0
        )  # fmt: skip
        self._kept = found.units_in_head(refit)
        removal = remove_spurious_units(
            pl_module, found, refit=refit, val_data=val_data, batch_size=self.budget.batch_size,
            seed=self.seed, progress=self.output.progress, warn=_warn,
        )  # fmt: skip
        return removal.decision(), removal.figures

    # -- helpers ----------------------------------------------------------------------------

    def _check_copies_data(self, trainer: pl.Trainer) -> None:
        """A grid of ``refit.copies`` is chosen on validation data: without any, fail now."""
        grid = self.refit.copies_grid
        if len(grid) < 2 or self.val_dataset is not None:
            return
        try:
            defined = trainer.fit_loop.epoch_loop.val_loop._data_source.is_defined()
        except AttributeError:  # cannot tell yet: the run-time check applies
            return
        if not defined:
            raise bad_option(
                "val_dataset",
                "validation data (`val_dataset=` or a validation dataloader) to choose "
                f"`refit.copies` among {list(grid)} on",
                None,
            )

    def _resolve_backends(
        self, pl_module: nn.Module, data: Dataset[Any] | None
    ) -> ResolvedExperiments:
        """The agent and backends ``backends`` asks for, checked they can run (once the data
        is known: a resolution without data is tried again when it is)."""
        if self._resolved is not None:
            return self._resolved
        resolved = resolve_backends(
            self.backends, _OWNER, dataset=data, class_names=self._class_names(pl_module, data),
            candidate_attributes=self.candidate_attributes, seed=self.seed,
        )  # fmt: skip
        if data is not None:
            self._resolved = resolved
        self.agent = resolved.agent
        return resolved

    def _class_names(self, pl_module: nn.Module, dataset: Dataset[Any] | None) -> list[str] | None:
        return class_names_of(pl_module, dataset, self.class_names)

    def _write_report(self, root: Path, figures: dict[str, Any], epoch: int | None) -> Path:
        """The HTML report of the last run (also under ``epoch-NNN/``); returns its path."""
        sections = [
            sections_from_toolbox(j.report, j.toolbox)
            for j in self.judgements
            if j.toolbox is not None
        ]
        meta = {
            "agent": self.agent.name,
            **{
                name: (f"{value:.3f}" if isinstance(value, float) else str(value))
                for name, value in figures.items()
            },
        }
        title = f"SpuriousFeatureRemover — {self.refit.remedy}"
        latest = write_report(root / "report.html", sections, title=title, meta=meta)
        self.report_path = latest
        if epoch is None:
            return latest
        return write_report(root / f"epoch-{epoch:03d}" / "report.html", sections, title, meta)

    def unit_table(self) -> pd.DataFrame:
        """One row per judged unit: unit, L1 weight, verdict, kept, description, evidence."""
        return unit_table(self.judgements, self._kept)

    def _log(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        figures: dict[str, Any],
        root: Path,
        epoch: int,
    ) -> None:
        numbers = {
            f"maia/spurious/{name}": float(value)
            for name, value in figures.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        log_figures(trainer, pl_module, numbers, at_fit_end=self.when == "fit_end")
        if not trainer.is_global_zero:
            return
        path = self._write_report(root, figures, epoch)
        table = self.unit_table()
        for adapter in self._adapters or []:
            adapter.log_table("maia/spurious_units", table, trainer.global_step)
            adapter.log_file(path, trainer.global_step)


def _warn(message: str) -> None:
    rank_zero_warn(f"{_OWNER}: {message}")


__all__ = ["SpuriousFeatureRemover"]
