"""Training: losses, training loop, synthetic datasets. Imports torch only where training needs it."""
