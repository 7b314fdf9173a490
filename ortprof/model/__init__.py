"""Typed data passed between the stages: RunManifest and Profile in, Report out."""
