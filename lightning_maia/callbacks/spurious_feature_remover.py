"""SpuriousFeatureRemover: find head inputs that carry a spurious feature, retrain without them.

MAIA's §5.1 as a callback. On the head (the last ``nn.Linear``, or ``head=`` a module path) and
the features it reads:

1. an L1-regularised logistic regression on the training features picks the top-``k`` units;
2. the agent runs ``spurious_check`` on each: does the unit follow the class, or a candidate
   spurious attribute (``candidate_attributes``, e.g. ``("background",)``; empty lets the agent
   find them) with the class held fixed? Verdict ``core`` / ``spurious`` / ``unclear``;
3. a remedy refits the head on the (unbalanced) training data, without group labels:
   ``select`` keeps only the units whose verdict is in ``keep``; ``erase`` projects out the
   subspace that the agent's background-only edits move the features along;
4. the new head is installed as a :class:`~lightning_maia.analysis.masked_head.MaskedHead` (the
   original kept beside it), which checkpoints keep.

Rank zero decides; the decision (weights, mask, projection) is broadcast so every rank installs
the same head. Logged: a unit table, before/after accuracy, balanced accuracy and worst-group
accuracy where the validation data has group labels, and the HTML report.

>>> remover = SpuriousFeatureRemover(k=20, remedy="erase")
>>> remover.state_key
"SpuriousFeatureRemover{'head': None, 'k': 20, 'remedy': 'erase'}"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from typing_extensions import override

from lightning_maia.agents.scientist_design import ExperimentDesigner
from lightning_maia.agents.tasks import Agent
from lightning_maia.analysis.masked_head import (
    MaskedHead,
    effective_linear,
    find_head,
    fold_masked_heads,
    install_masked_head,
    reinstall_masked_heads,
)
from lightning_maia.analysis.spurious import (
    REFIT,
    LinearHead,
    RefitProtocol,
    UnitJudgement,
    counterfactual_deltas,
    dataset_groups,
    erase_remedy,
    head_metrics,
    judge_units,
    l1_top_units,
    select_remedy,
)
from lightning_maia.callbacks._experiment_setup import (
    ResolvedExperiments,
    given_agent,
    resolve_experiments,
    train_dataset_at_setup,
)
from lightning_maia.callbacks._shared import (
    check_number,
    finished_epoch,
    log_figures,
    output_root,
    resolve_agent,
    should_skip,
)
from lightning_maia.callbacks._shared import validation_dataset as _validation_dataset
from lightning_maia.callbacks.options import ON_ERROR, OnError
from lightning_maia.errors import ConfigurationError, MaiaError, bad_option
from lightning_maia.exemplars import compute_exemplars, preprocess_for
from lightning_maia.reporting.adapters import LoggerAdapter, adapters_for
from lightning_maia.reporting.html_report import sections_from_toolbox, write_report
from lightning_maia.subject import Preprocess
from lightning_maia.tools.backends.base import ImageDescriber, ImageEditor, ImageGenerator
from lightning_maia.units import find_layer

WHEN = ("fit_end", "epoch")
REMEDIES = ("select", "erase")
#: Leaf modules that only reshape: the feature layer is the module around them.
_PASS_THROUGH = (nn.Flatten, nn.Identity, nn.Dropout)


class SpuriousFeatureRemover(Callback):
    """Judge the head's top input units with the agent and refit the head without spurious ones.

    Args:
        head: module path of the classifier head (default: the last ``nn.Linear``).
        feature_layer: module whose output the head reads (default: found by one forward;
            a conv layer whose spatial mean is the head's input counts too).
        k: units the L1 regression selects for judgement.
        remedy: ``select`` (a head on the kept units) or ``erase`` (project out the edits'
            spurious subspace, keep all units).
        keep: verdicts whose units ``select`` keeps: by default the units the agent saw follow
            the class with the attribute held fixed, as MAIA kept; ``("core", "unclear")``
            keeps every unit it did not judge spurious.
        class_names: the classes, in output order (default: the module's ``class_names``, else
            the training dataset's).
        candidate_attributes: attributes that may be spurious; empty: the agent finds them.
        agent: the agent (default: the offline :class:`ScientistAgent`).
        dataset: the (unbalanced) training data for selection, exemplars and the refit
            (default: the training dataloader's dataset). Items are ``(image, label, ...)``.
        val_dataset: data for before/after figures (default: the validation dataloader's).
        when: ``fit_end`` (once) or ``epoch`` (after every ``every_n_epochs`` training epochs;
            training then goes on with the masked head in place).
        every_n_epochs: the period for ``when="epoch"``.
        finetune_epochs: after a ``fit_end`` refit, fine-tune the masked head this many epochs
            on the training features with cross-entropy (the mask stays in place).
        protocol: the refit protocol (standardised features, one strong L2), or ``"cv"``: the
            L2 penalty picked by cross-validation on the training features (class labels only;
            :func:`~lightning_maia.analysis.spurious.choose_refit`). Use ``"cv"`` on real data,
            where a backbone spreads a shortcut over many units and a strong fixed penalty
            leans on it.
        erase_energy: share of the edits' feature variance the erased subspace explains.
        exemplars_k: dataset exemplars per unit shown to the agent.
        preprocess, generator, editor, describer: the agent's model input and image backends.
        designer: how the offline agent designs experiments: ``retrieval`` (the training data's
            attribute columns, answered by retrieval and weight-free edits), ``procedural``,
            ``prompts``, ``auto`` or a designer object; None: procedural for procedural data,
            and a setup error naming what to configure for data the agent cannot design on.
        batch_size: batch size of the feature passes.
        output_dir: where the report goes (default ``<log_dir>/maia``).
        on_error: ``warn`` (a warning and failed reports; the head is left unchanged when no
            verdict came back) or ``raise``.
        seed: seeds the agent.
        progress: show progress bars.
    """

    def __init__(
        self,
        *,
        head: str | None = None,
        feature_layer: str | None = None,
        k: int = 50,
        remedy: Literal["select", "erase"] = "select",
        keep: Sequence[Literal["core", "unclear"]] = ("core",),
        class_names: Sequence[str] | None = None,
        candidate_attributes: Sequence[str] = ("background",),
        agent: Agent | Literal["scientist"] | None = None,
        dataset: Dataset[Any] | None = None,
        val_dataset: Dataset[Any] | None = None,
        when: Literal["fit_end", "epoch"] = "fit_end",
        every_n_epochs: int = 1,
        finetune_epochs: int = 0,
        protocol: RefitProtocol | Literal["cv"] = REFIT,
        erase_energy: float = 0.8,
        exemplars_k: int = 15,
        preprocess: Preprocess | None = None,
        generator: ImageGenerator | None = None,
        editor: ImageEditor | None = None,
        describer: ImageDescriber | None = None,
        designer: str | ExperimentDesigner | None = None,
        batch_size: int = 256,
        output_dir: str | None = None,
        on_error: OnError = "warn",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if remedy not in REMEDIES:
            raise bad_option("remedy", " or ".join(REMEDIES), remedy)
        if when not in WHEN:
            raise bad_option("when", " or ".join(WHEN), when)
        if on_error not in ON_ERROR:
            raise bad_option("on_error", " or ".join(ON_ERROR), on_error)
        if isinstance(keep, str) or not keep or any(v not in ("core", "unclear") for v in keep):
            raise bad_option("keep", "verdicts among core and unclear, e.g. ('core',)", keep)
        if isinstance(candidate_attributes, str):
            raise bad_option("candidate_attributes", "a list of attributes", candidate_attributes)
        if not isinstance(protocol, RefitProtocol) and protocol != "cv":
            raise bad_option("protocol", "a RefitProtocol or 'cv'", protocol)
        for name, value in (
            ("k", k),
            ("every_n_epochs", every_n_epochs),
            ("exemplars_k", exemplars_k),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_option(name, "a positive integer", value)
        if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int):
            raise bad_option("finetune_epochs", "a non-negative integer", finetune_epochs)
        if finetune_epochs < 0:
            raise bad_option("finetune_epochs", "a non-negative integer", finetune_epochs)
        check_number("erase_energy", erase_energy, 0.0, 1.0, "a share in (0, 1]")
        if erase_energy == 0.0:
            raise bad_option("erase_energy", "a share in (0, 1]", erase_energy)
        self.head, self.feature_layer, self.k, self.remedy = head, feature_layer, k, remedy
        self.keep = tuple(keep)
        self.class_names = list(class_names) if class_names is not None else None
        self.candidate_attributes = tuple(candidate_attributes)
        self.agent: Agent = resolve_agent(agent, seed)
        self._given_agent = given_agent(agent, self.agent)
        self.designer = designer
        self._experiments: ResolvedExperiments | None = None
        self.dataset, self.val_dataset = dataset, val_dataset
        self.when, self.every_n_epochs, self.finetune_epochs = when, every_n_epochs, finetune_epochs
        self.protocol, self.erase_energy, self.exemplars_k = protocol, erase_energy, exemplars_k
        self.preprocess = preprocess
        self.generator, self.editor, self.describer = generator, editor, describer
        self.batch_size, self.output_dir = batch_size, output_dir
        self.on_error, self.seed, self.progress = on_error, seed, progress
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
        return self._generate_state_key(head=self.head, k=self.k, remedy=self.remedy)

    # -- lifecycle --------------------------------------------------------------------------

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        find_head(pl_module, self.head)  # a bad `head` fails here, before training
        if self.feature_layer is not None:
            find_layer(pl_module, self.feature_layer)
        if self._class_names(pl_module, self.dataset) is None and self.dataset is not None:
            raise bad_option("class_names", "the class names in output order", None)
        data = self.dataset if self.dataset is not None else train_dataset_at_setup(trainer)
        self._resolve_experiments(pl_module, data)  # an unusable designer fails here
        # Every rank, here: under DDP the log folder is broadcast from rank zero.
        self._root = output_root(trainer, self.output_dir)

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
        train_data = self.dataset if self.dataset is not None else _train_dataset(trainer)
        if train_data is None:
            rank_zero_warn("SpuriousFeatureRemover found no training data: pass `dataset=`")
            return None
        head_path, head = find_head(pl_module, self.head)
        layer, reduction = self._feature_layer(pl_module, head, train_data)
        class_names = self._class_names(pl_module, train_data)
        if class_names is None:
            raise bad_option("class_names", "the class names in output order", None)
        base = self._root if self._root is not None else output_root(trainer, self.output_dir)
        root = base / "spurious"
        if self._adapters is None:
            self._adapters = adapters_for(trainer)
        # Every rank reads its shard; the merged exemplars are the same on all ranks.
        exemplars = compute_exemplars(
            pl_module,
            train_data,
            [f"{layer}:*"],
            k=self.exemplars_k,
            reduction=reduction,
            progress=False,
            preprocess=self.preprocess,
        )
        val_data = (
            self.val_dataset if self.val_dataset is not None else _validation_dataset(trainer)
        )
        decision: dict[str, Any] | None = None
        figures: dict[str, Any] | None = None
        if trainer.is_global_zero:
            try:
                decision, figures = self._decide(
                    pl_module, head, layer, reduction, class_names, train_data, val_data, exemplars
                )
            except ConfigurationError:
                raise
            except (MaiaError, OSError, TimeoutError) as error:
                if self.on_error == "raise":
                    raise
                rank_zero_warn(f"SpuriousFeatureRemover failed; the head is unchanged: {error}")
                figures = {"status": "failed", "failure_reason": str(error)}
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision is not None:
            _forget_optimizer_state(trainer, self._install(pl_module, head_path, decision))
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
        written when ``output_dir`` is set)."""
        train_data = dataset if dataset is not None else self.dataset
        if train_data is None:
            raise bad_option("dataset", "the (unbalanced) training data", None)
        head_path, head = find_head(model, self.head)
        layer, reduction = self._feature_layer(model, head, train_data)
        class_names = self._class_names(model, train_data)
        if class_names is None:
            raise bad_option("class_names", "the class names in output order", None)
        exemplars = compute_exemplars(
            model, train_data, [f"{layer}:*"], k=self.exemplars_k, reduction=reduction,
            progress=False, preprocess=self.preprocess,
        )  # fmt: skip
        decision, figures = self._decide(
            model, head, layer, reduction, class_names, train_data, self.val_dataset, exemplars
        )
        if decision is not None:
            self._install(model, head_path, decision)
        self.history.append(dict(figures))
        if self.output_dir is not None:
            self._write_report(Path(self.output_dir) / "spurious", figures, epoch=None)
        return figures

    def _install(self, model: nn.Module, path: str, decision: dict[str, Any]) -> MaskedHead:
        masked = install_masked_head(
            model,
            path,
            decision["weight"],
            decision["bias"],
            mask=decision["mask"],
            projection=decision["projection"],
            remedy=decision["remedy"],
        )
        self.decision = decision
        return masked

    def _decide(
        self,
        pl_module: nn.Module,
        head: nn.Linear,
        layer: str,
        reduction: str,
        class_names: list[str],
        train_data: Dataset[Any],
        val_data: Dataset[Any] | None,
        exemplars: Any,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        train = head_inputs(
            pl_module, head, train_data, self.batch_size, self.progress, self.preprocess
        )
        selection = l1_top_units(train.features, train.labels, self.k, seed=self.seed)
        self._resolve_experiments(pl_module, train_data)
        self.judgements = judge_units(
            pl_module,
            layer,
            selection.units,
            class_names=class_names,
            candidate_attributes=self.candidate_attributes,
            agent=self.agent,
            exemplars=exemplars,
            l1_weights=selection.weights,
            preprocess=self.preprocess,
            reduction=reduction,
            generator=self.generator,
            editor=self.editor,
            describer=self.describer,
            seed=self.seed,
            on_error=self.on_error,
            warn=lambda message: rank_zero_warn(f"SpuriousFeatureRemover: {message}"),
            progress=self.progress,
        )
        judged = [j for j in self.judgements if j.verdict != "failed"]
        kept = [j.unit.index for j in self.judgements if j.verdict in self.keep]
        self._kept = set(kept) if self.remedy == "select" else {j.unit.index for j in judged}
        figures: dict[str, Any] = {
            "status": "ok",
            "remedy": self.remedy,
            "units_judged": len(judged),
            "units_failed": len(self.judgements) - len(judged),
            "units_spurious": sum(j.verdict == "spurious" for j in self.judgements),
            "units_core": sum(j.verdict == "core" for j in self.judgements),
            "units_kept": len(kept) if self.remedy == "select" else train.features.shape[1],
        }
        classes = len(class_names)
        new: LinearHead | None = None
        if not judged:
            rank_zero_warn("SpuriousFeatureRemover: no unit was judged; the head is unchanged")
            figures["status"] = "failed"
            figures["failure_reason"] = "no unit was judged"
        elif self.remedy == "select":
            if kept:
                new = select_remedy(
                    train.features, train.labels, kept, protocol=self.protocol, num_classes=classes
                )
            else:
                rank_zero_warn(
                    f"SpuriousFeatureRemover: no unit got a verdict in {self.keep}; "
                    "the head is unchanged"
                )
        else:
            toolboxes = [j.toolbox for j in judged if j.toolbox is not None]
            attribute = (self.candidate_attributes or ("background",))[0]
            deltas = counterfactual_deltas(
                pl_module, layer, toolboxes, attribute, preprocess=self.preprocess
            )
            new = erase_remedy(
                train.features,
                train.labels,
                deltas,
                energy=self.erase_energy,
                protocol=self.protocol,
                num_classes=classes,
            )
            figures["erased_dimensions"] = round(
                float(torch.trace(torch.eye(len(new.mask)) - new.projection))
            )
        if new is not None and self.finetune_epochs and self.when == "fit_end":
            new = finetune_head(new, train.features, train.labels, self.finetune_epochs, self.seed)
        if val_data is not None:
            val = head_inputs(
                pl_module, head, val_data, self.batch_size, self.progress, self.preprocess
            )
            weight, bias = effective_linear(head)
            before = head_metrics(
                val.features @ weight.T.cpu() + bias.cpu(), val.labels, val.groups
            )
            figures.update({f"before_{name}": value for name, value in before.items()})
            after = (
                head_metrics(new.logits(val.features), val.labels, val.groups) if new else before
            )
            figures.update({f"after_{name}": value for name, value in after.items()})
        if new is None:
            return None, figures
        decision = {
            "weight": new.weight,
            "bias": new.bias,
            "mask": new.mask,
            "projection": new.projection,
            "remedy": self.remedy,
            "kept_units": kept,
        }
        return decision, figures

    # -- helpers ----------------------------------------------------------------------------

    def _resolve_experiments(self, pl_module: nn.Module, data: Dataset[Any] | None) -> None:
        """Build the agent and backends ``designer`` asks for (once), checking they can run."""
        if self._experiments is not None:
            return
        self._experiments = resolve_experiments(
            "SpuriousFeatureRemover", agent=self._given_agent, designer=self.designer,
            dataset=data, class_names=self._class_names(pl_module, data),
            candidate_attributes=self.candidate_attributes, generator=self.generator,
            editor=self.editor, describer=self.describer, seed=self.seed,
        )  # fmt: skip
        if self._experiments is not None:
            self._experiments.install(self)

    def _class_names(self, pl_module: nn.Module, dataset: Dataset[Any] | None) -> list[str] | None:
        for source in (self.class_names, getattr(pl_module, "class_names", None)):
            if source:
                return list(source)
        names = getattr(dataset, "class_names", None)
        return list(names) if names else None

    def _feature_layer(
        self, model: nn.Module, head: nn.Linear, dataset: Dataset[Any]
    ) -> tuple[str, str]:
        if self.feature_layer is not None:
            return self.feature_layer, "mean"
        found = feeding_layer(model, head, dataset, self.preprocess)
        if found is None:
            raise bad_option(
                "feature_layer",
                "the module whose output the head reads (none was found by a forward pass)",
                None,
            )
        return found

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
        title = f"SpuriousFeatureRemover — {self.remedy}"
        latest = write_report(root / "report.html", sections, title=title, meta=meta)
        self.report_path = latest
        if epoch is None:
            return latest
        return write_report(root / f"epoch-{epoch:03d}" / "report.html", sections, title, meta)

    def unit_table(self) -> pd.DataFrame:
        """One row per judged unit: unit, L1 weight, verdict, kept, description, evidence."""
        rows = [{**j.to_row(), "kept": j.unit.index in self._kept} for j in self.judgements]
        columns = ["unit", "l1_weight", "verdict", "kept", "description", "evidence"]
        return pd.DataFrame(rows, columns=columns)

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


# -- feature passes ---------------------------------------------------------------------------


class HeadInputs:
    """The raw features a head reads on a dataset, with labels and group labels."""

    def __init__(self, features: Tensor, labels: Tensor, groups: Tensor | None) -> None:
        self.features, self.labels, self.groups = features, labels, groups


@torch.inference_mode()
def head_inputs(
    model: nn.Module,
    head: nn.Module,
    dataset: Dataset[Any],
    batch_size: int = 256,
    progress: bool = False,
    preprocess: Preprocess | None = None,
) -> HeadInputs:
    """What ``head`` reads (its raw input, before any mask) on every item of ``dataset``
    (display images, through ``preprocess`` where given)."""
    preprocess = preprocess_for(dataset, preprocess)  # declared model inputs go in as they are
    captured: list[Tensor] = []

    def hook(_: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0].detach().float().cpu())

    handle = head.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    labels: list[Tensor] = []
    device = next(model.parameters()).device
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        for batch in tqdm(loader, desc="head inputs", leave=False, disable=not progress):
            images = batch[0].to(device)
            model(preprocess(images) if preprocess is not None else images)
            labels.append(torch.as_tensor(batch[1]).long())
    finally:
        handle.remove()
        model.train(was_training)
    return HeadInputs(torch.cat(captured), torch.cat(labels), dataset_groups(dataset))


@torch.inference_mode()
def feeding_layer(
    model: nn.Module, head: nn.Module, dataset: Dataset[Any], preprocess: Preprocess | None = None
) -> tuple[str, str] | None:
    """The module whose output ``head`` reads and how to reduce it: ``(path, "mean")``.

    One forward on two items: the innermost module whose output *is* the head's input (pure
    reshapes such as ``Flatten`` skipped), else a conv-like module whose spatial mean equals it.
    """
    images = torch.stack([dataset[i][0] for i in range(min(2, len(dataset)))])  # type: ignore[arg-type]
    preprocess = preprocess_for(dataset, preprocess)
    outputs: list[tuple[str, Any]] = []
    handles = []
    names = {module: name for name, module in model.named_modules() if name}
    for module, name in names.items():
        if module is head:
            continue
        handles.append(
            module.register_forward_hook(lambda m, _, out, name=name: outputs.append((name, out)))
        )
    seen: list[Tensor] = []
    handles.append(head.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0])))
    was_training = model.training
    model.eval()
    try:
        images = images.to(next(model.parameters()).device)
        model(preprocess(images) if preprocess is not None else images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not seen:
        return None
    target = seen[0]
    modules = dict(model.named_modules())
    for name, output in outputs:
        if output is target and not isinstance(modules[name], _PASS_THROUGH):
            return name, "mean"
    for name, output in reversed(outputs):
        if (
            isinstance(output, Tensor)
            and output.ndim == 4
            and output.shape[:2] == target.shape
            and torch.allclose(output.float().mean(dim=(2, 3)), target.float(), atol=1e-5)
        ):
            return name, "mean"
    return None


def finetune_head(
    head: LinearHead, features: Tensor, labels: Tensor, epochs: int, seed: int = 0
) -> LinearHead:
    """Fine-tune ``head`` on the features with cross-entropy, its mask and projection fixed."""
    generator = torch.Generator().manual_seed(seed)
    weight = head.weight.clone().requires_grad_(True)
    bias = head.bias.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-3)
    seen = (features.float() * head.mask) @ head.projection.T
    with torch.enable_grad():
        for _ in range(epochs):
            for batch in torch.randperm(len(labels), generator=generator).split(256):
                loss = F.cross_entropy(seen[batch] @ weight.T + bias, labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    # Keep the weight inside the mask and projection, so a plain Linear loading it agrees.
    final = (weight.detach() @ head.projection) * head.mask
    return LinearHead(final, bias.detach(), head.mask, head.projection)


def _train_dataset(trainer: pl.Trainer) -> Dataset[Any] | None:
    """The dataset of the (first) training dataloader, when the trainer has one."""
    loader = trainer.train_dataloader
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    if isinstance(loader, DataLoader):
        dataset: Dataset[Any] = loader.dataset
        return dataset
    return None


def refresh_checkpoints(trainer: pl.Trainer) -> list[str]:
    """Save again the ModelCheckpoint files that hold the final weights (saved at this global
    step), so that after a ``fit_end`` refit they hold the new head too. Every rank calls it
    (saving is collective); returns the paths."""
    paths: list[tuple[str, bool]] = []
    if trainer.is_global_zero:
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            saved = {*callback.best_k_models, callback.best_model_path, callback.last_model_path}
            for path in sorted(saved - {""}):
                if _saved_at_step(Path(path)) == trainer.global_step:
                    paths.append((str(path), callback.save_weights_only))
    paths = trainer.strategy.broadcast(paths, src=0)
    for path, weights_only in paths:
        trainer.save_checkpoint(path, weights_only=weights_only)
    return [path for path, _ in paths]


def _saved_at_step(path: Path) -> int | None:
    """The global step a local checkpoint file was saved at (None: not a local checkpoint)."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (OSError, RuntimeError, ValueError):
        return None
    step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    return int(step) if step is not None else None


def _forget_optimizer_state(trainer: pl.Trainer, head: nn.Module) -> None:
    """Momentum built up for the old head would push the new one; drop it."""
    for optimizer in trainer.optimizers:
        for parameter in head.parameters():
            optimizer.state.pop(parameter, None)


__all__ = ["SpuriousFeatureRemover", "feeding_layer", "finetune_head", "head_inputs"]
