"""Resource kinds: one module per kind, the model and its providers side by side."""
