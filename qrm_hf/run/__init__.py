"""A run's settings (RunConfig: YAML + flags), its folder (the one place that names, writes and reads the files a
run leaves) and the agreement of its ranks."""
