"""Analysis pipeline: samples -> symbolized stacks -> thread roles -> categories -> findings."""
