"""Example plugins (docs/plugins.md). A regular package on purpose: opacus installs a top-level
`examples` package, which would otherwise shadow this folder on import."""
