"""Train a model from its training spec: ``python models/train.py examples/fraud/train_v2.yaml``.

Same as `streamscore model train SPEC`; the implementation is workers/model/train.py. The specs
of the committed models: examples/fraud/train_v1.yaml (fraud_mlp v1), examples/fraud/train_v2.yaml
(fraud_gbm v2), examples/ato/train.yaml (ato_gbm v1).
"""

import sys
from pathlib import Path

# Run as a plain script from a fresh clone: make the repository importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.model.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
