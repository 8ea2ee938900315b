"""What a run tells a person: report.md, plots, the model card and the probe."""
