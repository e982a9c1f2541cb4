"""Training: the one loop (`loop`) and what it trains (the proposal network, the FCN, learned
prompts), and self-training on pseudo-labels."""
