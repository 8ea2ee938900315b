"""The hyperparameter search: the space (YAML -> Optuna), the study through Trainer.hyperparameter_search, storages
and trial summaries."""
