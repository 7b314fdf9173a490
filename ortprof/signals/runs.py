"""ORT's run() calls: sessions, their options and each run's span, from the startup hook."""
from dataclasses import dataclass
from typing import Optional

from .base import Signal

HOOK_DIR = "hook"


@dataclass
class HookSummary:
    """run.json "hook": where the hook's records are and how many it wrote."""
    dir: Optional[str] = None
    sessions: int = 0
    runs: int = 0


SIGNAL = Signal(name="runs", description="sessions, options and per-run latency from the injected startup hook",
                sections={"hook": HookSummary}, files=(HOOK_DIR,))
