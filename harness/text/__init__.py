"""Text victims: one text run and the text matrix (docs/text.md)."""
