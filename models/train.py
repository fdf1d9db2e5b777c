"""Train the fraud MLP and export models/fraud_mlp/1/{model.onnx,manifest.json}.

Usage: python models/train.py [--seed 7] [--out models]. Same as `streamscore model train`;
the implementation is workers/model/train.py.
"""

import sys
from pathlib import Path

# Run as a plain script from a fresh clone: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.model.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
