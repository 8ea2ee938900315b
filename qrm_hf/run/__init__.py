"""A run's settings (RunConfig: YAML + flags) and its folder: the one place that names, writes and reads the files a
run leaves."""
