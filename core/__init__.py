"""The bottom layer: errors, the registry, option parsing and file io. Imports nothing of fedleak."""
