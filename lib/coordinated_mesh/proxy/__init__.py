"""The telemetry proxy: its configuration, the pure planner, nginx rendering, Pebble layers."""
