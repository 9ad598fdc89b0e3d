"""deepsci.apps — one package per science; each imports the core, never another app."""

APPS = ("retinopathy", "pathology", "variants", "molecules", "connectomics")
