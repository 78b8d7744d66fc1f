"""The co-simulation actors. Each takes part in some of the six phases of a step."""
