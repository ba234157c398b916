"""Evaluation: C-Eval/CMMLU scoring, val perplexity, reports and comparisons."""
