"""LLM4DSR: denoising sequential recommendation with an LLM."""
