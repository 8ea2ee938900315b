"""The reward model: its config and model classes (saved folders name these two files), the checks a model folder
passes when it loads, and the encoders qrm_hf ships by name."""
