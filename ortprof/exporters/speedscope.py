"""speedscope's JSON file format (https://www.speedscope.app/file-format-schema.json).

One "sampled" profile per thread, busiest first, in milliseconds. Samples stay
in time order, and where a thread was off CPU for a sample period or more an
empty sample (speedscope's idle weight) fills the gap, so the Time Order view's
x-axis is wall time; Left Heavy and Sandwich percentages exclude idle weight.
Frames are the profile's frame table as is (a sample's frame ids are indices
into shared.frames); `file` is the source file where it was looked up, else
the module (DSO) the address is in.
"""
import json
import os
from dataclasses import dataclass

from .. import __version__
from ..errors import InputError
from .base import Exporter

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
NO_STACK = "[no stack]"     # perf recorded no call chain for the sample


def frame_entry(frame, mapping_path):
    """A speedscope frame: name, and file (+ line) from the source line or else the module."""
    entry = {"name": frame.display_name}
    path, line = frame.source_file_line()
    if path:
        entry["file"] = path
        if line:
            entry["line"] = line
    elif mapping_path:
        entry["file"] = mapping_path
    return entry


def _ms(seconds):
    return round(seconds * 1000, 6)     # whole ns: no float noise in the file


def thread_profile(thread, start, frame_lists):
    """The sampled profile of one thread; `start` (monotonic s) is time 0."""
    samples, weights = [], []
    position = first = None     # where speedscope will draw the next sample (ms)
    for time, stack_id, ns in zip(thread.times, thread.stack_ids, thread.weights_ns):
        weight = ns / 1e6
        began = _ms(time - start) - weight        # a cpu-clock sample closes the period it weighs
        if position is None:
            position = first = began
        elif began - position >= weight:         # off CPU a period or more: idle, so the drift stays < 1 period
            samples.append([])
            weights.append(round(began - position, 6))
            position = began
        samples.append(frame_lists[stack_id])
        weights.append(weight)
        position += weight
    if not samples:
        return None
    return {"type": "sampled", "name": f"{thread.role} {thread.tid}", "unit": "milliseconds",
            "startValue": round(first, 6), "endValue": round(first + sum(weights), 6),
            "samples": samples, "weights": weights}


def speedscope_document(profile, report):
    """The speedscope file of `profile` as a dict."""
    frames = [frame_entry(frame, profile.mappings[frame.mapping].path) for frame in profile.frames]
    frame_lists = [list(stack.frames) for stack in profile.stacks]
    empty = [stack_id for stack_id, frames_of in enumerate(frame_lists) if not frames_of]
    if empty:   # an empty speedscope sample means idle: give stackless CPU samples a frame of their own
        for stack_id in empty:
            frame_lists[stack_id] = [len(frames)]
        frames.append({"name": NO_STACK})
    start = profile.span()[0]
    threads = sorted(profile.threads.values(), key=lambda thread: (-thread.ns, thread.tid))
    profiles = [entry for entry in (thread_profile(thread, start, frame_lists) for thread in threads)
                if entry is not None]
    return {"$schema": SCHEMA_URL, "name": run_name(report), "exporter": f"ortprof {__version__}",
            "activeProfileIndex": 0, "shared": {"frames": frames}, "profiles": profiles}


def run_name(report):
    """What speedscope shows as the title: the run directory's name and its command."""
    name = os.path.basename(os.path.normpath(report.run)) if report.run else "ortprof profile"
    if report.command:
        name = f"{name}: {' '.join(map(str, report.command))}"
    return name


@dataclass(frozen=True)
class SpeedscopeExporter(Exporter):

    def write(self, profile, report, stream):
        document = speedscope_document(profile, report)
        if not document["profiles"]:    # speedscope would only say "it's empty!"
            why = report.empty_sections.get("totals") or "no thread has CPU samples"
            raise InputError(f"nothing to export to speedscope: {why}")
        json.dump(document, stream, separators=(",", ":"))
        stream.write("\n")


EXPORTER = SpeedscopeExporter("speedscope", ".speedscope.json",
                              "speedscope JSON: one sampled profile per thread, in time order (speedscope.app)")
