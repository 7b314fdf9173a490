"""The one interface every output format implements."""
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Exporter:
    name: str               # the --format name
    suffix: str             # the usual file suffix
    description: str        # one line for --help and docs
    binary: bool = False    # write() wants a binary stream

    def configure(self, **options):
        """A copy with the options this format has (e.g. folded's `by`); others, and None, are ignored."""
        own = {item.name for item in fields(self)} - {"name", "suffix", "description", "binary"}
        return replace(self, **{key: value for key, value in options.items() if key in own and value is not None})

    def write(self, profile, report, stream):
        raise NotImplementedError
