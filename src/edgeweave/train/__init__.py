"""Edge training: federated learning and its family (strategies, backends, privacy)."""


def run(config, progress=None):
    """Run (or resume) a federated experiment from a YAML path, a mapping or an
    :class:`~edgeweave.train.config.ExperimentConfig`; returns the list of RoundRecord.

    Imported on call so that ``import edgeweave.train`` stays cheap for the backends and wire
    code that only need its data contracts.
    """
    from edgeweave.train.experiment import run as _run

    return _run(config, progress)
