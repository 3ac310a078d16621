"""Differential privacy for federated training: user-level DP-FedAvg around any strategy,
local example-level DP-SGD on the clients through Opacus, and the privacy accounting (Opacus's
RDP accountant) both report every round."""

from edgeweave.train.privacy.accountant import PrivacyLedger, epsilon_for, noise_for_epsilon
from edgeweave.train.privacy.dp_fedavg import DPFedAvg
from edgeweave.train.privacy.dp_sgd import DPSGDBackend
from edgeweave.train.privacy.report import ClientPrivacyReport

__all__ = ["ClientPrivacyReport", "DPFedAvg", "DPSGDBackend", "PrivacyLedger", "epsilon_for",
           "noise_for_epsilon"]
