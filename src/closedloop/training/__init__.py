"""Creation: turning data into intelligence — trainers and the metrics that describe them.

:func:`train_logistic` fits a logistic model on a system's own features (validated and featurized
by the runtime's batch path) and returns a :class:`TrainResult` whose ``model`` goes straight into
:meth:`closedloop.Bundle.build` (with its ``metrics``).
"""

from __future__ import annotations

from closedloop.training.calibrate import calibrate
from closedloop.training.logistic import (
    TrainResult,
    encode_labels,
    log_loss,
    roc_auc,
    train_logistic,
)
from closedloop.training.policy import train_policy
from closedloop.training.stacking import fit_stacking
from closedloop.training.train import TrainRun, parse_params, train

__all__ = ["TrainResult", "calibrate", "encode_labels", "fit_stacking", "log_loss", "roc_auc", "train_logistic"]
__all__ += ["TrainRun", "parse_params", "train", "train_policy"]
