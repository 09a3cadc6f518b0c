"""Kubernetes adapters: the lazy client and its errors, pod labels, AuthorizationPolicy objects."""
