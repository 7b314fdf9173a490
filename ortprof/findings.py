"""The finding shape shared by `report` and `lint` (and their JSON output)."""
from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "warning", "critical")


@dataclass
class Finding:
    id: str                      # stable, kebab-case: "spin-wait", "initializer-inputs"
    severity: str                # one of SEVERITIES
    title: str                   # one line, with the key number
    evidence: dict = field(default_factory=dict)   # the numbers behind it
    remedy: str = ""             # ready-to-paste snippet (Python or shell)
    tradeoff: str = ""           # what the remedy costs
    explanation: str = ""        # why this happens, briefly

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_json(self):
        return asdict(self)


def severity_rank(severity):
    return SEVERITIES.index(severity)
