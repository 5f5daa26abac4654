"""Atomic data (``equinet.datasets``): reading, generating and batching structures as
torch_geometric graphs. Filled in by the data-pipeline work."""
