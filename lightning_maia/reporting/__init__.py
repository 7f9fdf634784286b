"""Results of the agent in the loggers people already use, and as files.

:func:`adapters_for` gives one :class:`LoggerAdapter` per logger of a trainer (CSV files,
TensorBoard, W&B, MLflow); each logs tables (pandas DataFrames), captioned images and text at a
step that never goes backwards, from global rank zero only. :mod:`.images` tiles images into
grids and writes PNG files, without torchvision.
"""

from lightning_maia.reporting.adapters import LoggerAdapter, adapters_for, log_key
from lightning_maia.reporting.csv_adapter import CSVAdapter
from lightning_maia.reporting.images import make_grid, save_png, to_png_bytes
from lightning_maia.reporting.mlflow_adapter import MLflowAdapter
from lightning_maia.reporting.tensorboard_adapter import TensorBoardAdapter
from lightning_maia.reporting.wandb_adapter import WandbAdapter

__all__ = [
    "CSVAdapter",
    "LoggerAdapter",
    "MLflowAdapter",
    "TensorBoardAdapter",
    "WandbAdapter",
    "adapters_for",
    "log_key",
    "make_grid",
    "save_png",
    "to_png_bytes",
]
