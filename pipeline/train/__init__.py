"""The train stage: the loop and its checkpoints, the models G and D, their losses and DiffAugment."""
