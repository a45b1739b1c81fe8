"""The evaluate stage: the yardstick, the ranking rules compared, fidelity measures and what a test set can tell."""
