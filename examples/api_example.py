"""Train a shared pool from Python and use it on raw rows (README, "Python API").

Run: `.venv/bin/python examples/api_example.py runs/api-demo` (a new or empty directory).
"""

import logging
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer

import securepool

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

config = {  # the TOML's tables as a dict; a path or a TOML string works as well
    "run": {"seed": 4},
    "data": {"dataset": "breast_cancer", "participants": 6},
    "pool": {
        "models": [
            {"id": "lr", "arch": "logreg", "seed": 1},
            {"id": "mlp", "arch": "mlp", "seed": 2, "hidden": 16},
        ]
    },
    "training": {"epochs": 5, "batch_size": 16, "lr": 0.1, "momentum": 0.9},
    "convergence": {"error_range": [0.0, 0.1], "max_iterations": 6},
    "acceptance": {"max_error_bound": 0.25},  # a quick demo's bar (default 0.15)
}
out = sys.argv[1] if len(sys.argv) > 1 else "runs/api-demo"  # must not exist, or be empty
summary = securepool.run(config, out=out)  # what summary.json holds
print("iterations", summary["iterations"], "converged", summary["converged"])
print("pool", summary["pool"], "best held-out accuracy", summary["best_accuracy"])

pool = securepool.load_pool(out)  # verified against its manifest first
if not pool.models:
    sys.exit("no model passed acceptance: raise convergence.max_iterations")
X, y = load_breast_cancer(return_X_y=True)  # raw rows, as scikit-learn gives them
print("classes", pool.classes_, "features", pool.n_features_in_)
print("first rows' class probabilities", pool.predict_proba(X[:3]).round(3).tolist())
print("pool vote accuracy on all 569 rows", round(float(np.mean(pool.predict(X) == y)), 3))
for model_id, model in pool.models.items():  # each model on its own
    print(model_id, "accuracy", round(float(np.mean(model.predict(X) == y)), 3))
