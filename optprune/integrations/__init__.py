"""Bridges to other tools: `optprune.integrations.llmcompressor` (needs llm-compressor installed)."""
