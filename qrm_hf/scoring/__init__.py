"""Scoring queries with a saved reward model: the scorer, the reward rule every entry shares, the reward objects RL
trainers call, the policy-text cleaner and the HTTP client of `qrm serve`."""
