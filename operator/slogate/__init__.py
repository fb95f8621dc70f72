"""slogate: Service Level Objectives as decisions, for Kubernetes."""

__version__ = "0.1.0"
