"""One run and what every other job of the harness builds on: the run config (TOML, the shipped
presets), the runner, result rows and their files, provenance, logs, user plugins, run folders."""
