"""Renderers: they only render (terminal, JSON, folded, HTML)."""
