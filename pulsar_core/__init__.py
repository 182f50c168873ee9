"""Pulsar's shared forecasting core: data contract, features, models, bundle, gate, events.

Heavy dependencies (torch, scikit-learn, mlflow) are imported lazily by the modules that need
them, so the operator can use the gate and the event schemas without them.
"""

__version__ = "0.1.0"
# Bundles record this; a predictor refuses a bundle whose major format differs.
BUNDLE_FORMAT_VERSION = 1
