"""pulsar_predictor: serves one SurgeModel's champion as a fast, safe forecast API.

`create_app(settings)` builds the FastAPI application; `pulsar serve` (cli.py) runs it.
"""

from pulsar_predictor.app import create_app

__all__ = ["create_app"]
