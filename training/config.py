"""Every knob of a training run, in one plain dataclass.

The defaults are the settings that produced the committed weights; the values were chosen on a
held-out slice of the training set (--holdout), never on the test set. The whole config is stored
in each checkpoint, and --resume refuses a checkpoint written with different settings.
"""

from dataclasses import dataclass, field

from app.model import DEFAULT_DROPOUT
from training.augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 0.4  # OneCycle peak learning rate
    # SGD with Nesterov momentum; OneCycle cycles it against the learning rate: from max_momentum
    # down to base_momentum while the rate rises, and back up while it falls.
    max_momentum: float = 0.95
    base_momentum: float = 0.85
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    dropout: float = DEFAULT_DROPOUT
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    holdout: int = 0  # > 0: train on the rest, evaluate on this many held-out training images
    train_limit: int | None = None  # use only the first N training images (smoke tests)
    test_limit: int | None = None  # evaluate on only the first N test images (smoke tests)
    device: str = "auto"  # auto | cpu | cuda
    # With --feedback: each stored correction that trains appears this many times per epoch.
    feedback_oversample: int = 8
