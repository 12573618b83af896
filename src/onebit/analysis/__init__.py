"""Analysis: accounting (params, memory, BOPs/FLOPs/OPs, compression) and plots."""

from .summary import LayerRow, Summary, summary

__all__ = ["summary", "Summary", "LayerRow"]
