"""Where the shared pretrained models and the CIFAR-10 test set live: `shared/` beside the repository
(as on the development and CI machines), or wherever ZERODATA_SHARED points."""
import os
from pathlib import Path

SHARED = Path(os.environ.get("ZERODATA_SHARED") or Path(__file__).resolve().parents[2] / "shared")
SHARED_MODELS = SHARED / "models"
CIFAR10_TEST = SHARED / "data" / "cifar10_test.npz"
