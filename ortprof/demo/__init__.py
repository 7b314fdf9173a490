"""The built-in demo: a MiniLM-shaped (or bert-large-shaped) encoder request loop."""
