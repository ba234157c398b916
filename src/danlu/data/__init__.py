"""Data: raw records to training examples (read, clean, mask PII, dedup, decontaminate, split, tokenize, cutoff)."""
