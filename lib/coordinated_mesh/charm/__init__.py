"""What both charm objects share: declared-name checks, the reconcile wiring, Pebble helpers."""
