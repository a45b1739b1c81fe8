"""The generate stage: drawing candidates from the checkpoint (sampling) and keeping the best of them (ranking)."""
