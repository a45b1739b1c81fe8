"""The report stage: one self-contained HTML page of the run."""
