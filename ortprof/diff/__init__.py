"""ortprof diff: two runs (or two saved reports) compared, with noise intervals and gates.

inputs (reading the two sides), bins (per-second CPU from a profile), stats
(intervals, verdicts), compare (the ortprof.diff/1 document), gates (--fail-on),
folded (the two-column folded diff), terminal (the rich rendering); the HTML page
is ortprof/render/diff_html.py.
"""
SCHEMA = "ortprof.diff/1"
