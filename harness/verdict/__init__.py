"""What counts as a pass: verdicts from stored rows, the CI gate, and run-to-run comparison
(docs/verdict.md)."""
