"""What the test suites share: fakes, builders and the harnesses of the real programs.

* :mod:`.binaries`: find nginx, prometheus, promtool (skip, or fail in CI, when missing);
* :mod:`.charm_loader`: load each charm's ``src/charm.py`` under its own name;
* :mod:`.coordinator`, :mod:`.worker`: the charms' in-memory Kubernetes and context builders;
* :mod:`.nginx`, :mod:`.proxy_strategies`: real nginx runs and hypothesis strategies for plans;
* :mod:`.envtest`: the real Kubernetes API server harness.
"""
