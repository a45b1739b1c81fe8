"""The export stage: the generated set as an ImageFolder or WebDataset with its card, and `load_export`."""
