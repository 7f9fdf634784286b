"""Results of the agent in the loggers people already use, and as files.

:func:`adapters_for` gives one :class:`LoggerAdapter` per logger of a trainer (CSV files,
TensorBoard, W&B, MLflow); each logs tables (pandas DataFrames), captioned images and text at a
step that never goes backwards, from global rank zero only. :mod:`._images` tiles images into
grids and writes PNG files, without torchvision.
"""

from lightning_maia.reporting._adapters import (
    LoggerAdapter,
    adapters_for,
    log_key,
)
from lightning_maia.reporting._audit_sections import AuditFindings
from lightning_maia.reporting._csv_adapter import CSVAdapter
from lightning_maia.reporting._html_report import render_report, write_report
from lightning_maia.reporting._images import (
    make_grid,
    save_png,
    to_png_bytes,
)
from lightning_maia.reporting._junit import (
    CheckResult,
    junit_xml,
    write_junit,
)
from lightning_maia.reporting._mlflow_adapter import MLflowAdapter
from lightning_maia.reporting._report_content import ReportImage, UnitSection, sections_from_toolbox
from lightning_maia.reporting._results_store import (
    load_audit,
    load_results,
    save_results,
)
from lightning_maia.reporting._tensorboard_adapter import TensorBoardAdapter
from lightning_maia.reporting._wandb_adapter import WandbAdapter

__all__ = [
    "AuditFindings",
    "CSVAdapter",
    "CheckResult",
    "LoggerAdapter",
    "MLflowAdapter",
    "ReportImage",
    "TensorBoardAdapter",
    "UnitSection",
    "WandbAdapter",
    "adapters_for",
    "junit_xml",
    "load_audit",
    "load_results",
    "log_key",
    "make_grid",
    "render_report",
    "save_png",
    "save_results",
    "sections_from_toolbox",
    "to_png_bytes",
    "write_junit",
    "write_report",
]
