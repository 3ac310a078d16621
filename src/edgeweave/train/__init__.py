"""Edge training: federated learning and its family (strategies, backends, privacy)."""
