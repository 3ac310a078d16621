"""The federated-learning wire: fl.proto's generated modules, tensor and config conversion, and
bearer-token auth. Regenerate the modules with ``python -m edgeweave.train.wire.build``."""
