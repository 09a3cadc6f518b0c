"""Mesh policies: declared, resolved, rendered for Istio, cluster-internal, and the beacon's relation."""
