"""Output formats. Each is one module here defining `EXPORTER`, an instance of a
subclass of base.Exporter (name, suffix, description, binary; write(profile,
report, stream); options as dataclass fields, set by configure()).
A new format is a new module plus its entry in FORMATS.
"""
import importlib

from ..errors import InputError

# --format name -> module under ortprof.exporters
FORMATS = {
    "terminal": "terminal",
    "json": "json_report",
    "folded": "folded",
    "html": "html",
    "speedscope": "speedscope",
    "pprof": "pprof",
}


def available():
    """Names of the formats whose module is present."""
    return [name for name in FORMATS if _module(name) is not None]


def _module(name):
    try:
        return importlib.import_module(f"{__name__}.{FORMATS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{FORMATS[name]}":
            return None
        raise


def get(name):
    module = _module(name) if name in FORMATS else None
    if module is None:
        raise InputError(f"unknown format {name!r}; one of {', '.join(available())}")
    return module.EXPORTER


def parse_format_spec(spec):
    """'NAME[=FILE]' -> (name, file or None); the name is checked."""
    name, _, path = spec.partition("=")
    name = name.strip()
    get(name)
    return name, (path or None)
