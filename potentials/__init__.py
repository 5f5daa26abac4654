"""GNN interatomic potentials (``equinet.potentials``) built from ``equinet.ops``.
Filled in by the potentials work."""
