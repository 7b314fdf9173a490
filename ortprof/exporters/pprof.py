"""pprof's profile.proto, gzipped: `go tool pprof`, Grafana Pyroscope, Datadog's pprof-format.

One pprof Sample per (thread, stack), values [samples/count, cpu/nanoseconds],
labelled so pprof's -tagfocus / Pyroscope's label filters can cut the profile the
way the report does:

    thread_id    numeric: the tid
    thread_role  caller, intra-op-worker, inter-op-worker, native-other, ...
    category     compute, spin, caller_spin, sync, kernel, python, other (the report's)
    session      the hook's session id(s) a thread ran run() for (comma-separated when
                 a caller ran several); pool workers get it only when the run had
                 exactly one session (a worker does not say whose work it did)

Locations are the profile's frames (DSO-relative addresses as perf printed them,
so every mapping starts at 0), perf's inlined frames folded into their caller's
location as extra lines; one Function per (name, source file). Build-ids:
the recording's for the ORT module, else read from the file when it is here.
"""
import gzip
import os
from collections import defaultdict
from dataclasses import dataclass

from ..analysis import roles as roles_mod
from ..analysis.pipeline import stack_category
from ..errors import InputError
from . import pprof_proto as pb
from .base import Exporter

NO_STACK = "[no stack]"
INLINED = "inlined"      # perf script's DSO for "(inlined)" frames
POOL_ROLES = (roles_mod.INTRA_WORKER, roles_mod.INTER_WORKER)


class _StringTable:
    """profile.proto's string table: index 0 is ""."""

    def __init__(self):
        self.strings = [""]
        self._index = {"": 0}

    def __call__(self, text):
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.strings)
            self.strings.append(text)
        return index


def session_labels(report):
    """tid -> session label: callers' own sessions; pool workers' when the run had one session."""
    sessions_of = defaultdict(set)
    for session in report.sessions:
        for tid in session.caller_tids:
            sessions_of[tid].add(session.session)
    labels = {tid: ",".join(str(s) for s in sorted(ids)) for tid, ids in sessions_of.items()}
    only = str(report.sessions[0].session) if len(report.sessions) == 1 else None
    return labels, only


def _build_id(mapping, report, local):
    if mapping.build_id:
        return mapping.build_id
    ort = report.ort
    if mapping.kind == "ort":
        # The recording's, or none: a local ORT module may be another build than the one profiled.
        same = not ort.ort_module or os.path.basename(ort.ort_module) == os.path.basename(mapping.path)
        return ort.build_id if same else None
    if local and mapping.path.startswith("/") and os.path.isfile(mapping.path):
        from ..symbols.elfinfo import read_elf_info
        try:
            return read_elf_info(mapping.path).build_id
        except InputError:
            return None
    return None


class _Locations:
    """Locations and functions as the samples need them, ids from 1 in order of first use.

    perf's "(inlined)" frames (DSO "inlined") carry their caller's address: with the
    next real frame toward the root they make one Location, innermost Line first,
    as profile.proto wants inlining told.
    """

    def __init__(self, profile, strings):
        self.profile, self.strings = profile, strings
        self.inlined = {m.id for m in profile.mappings if m.path == INLINED}
        self.location_ids = {}      # frame ids of one location (leaf first) -> id
        self.function_ids = {}      # (name, file) -> id
        self.locations, self.functions = [], []

    def function(self, name, path=""):
        function_id = self.function_ids.get((name, path))
        if function_id is None:
            function_id = self.function_ids[(name, path)] = len(self.function_ids) + 1
            self.functions.append(pb.Function(id=function_id, name=self.strings(name),
                                              system_name=self.strings(name), filename=self.strings(path)))
        return function_id

    def location(self, frame_ids):
        location_id = self.location_ids.get(frame_ids)
        if location_id is None:
            location_id = self.location_ids[frame_ids] = len(self.location_ids) + 1
            frames = [self.profile.frames[i] for i in frame_ids]
            outer = frames[-1]
            location = pb.Location(id=location_id, address=outer.address,
                                   mapping_id=0 if outer.mapping in self.inlined else outer.mapping + 1)
            for frame in frames:
                path, line = frame.source_file_line()
                path = path or ""
                location.line.add(function_id=self.function(frame.display_name, path), line=line)
            self.locations.append(location)
        return location_id

    def stack(self, stack_id):
        """Location ids of a stack, leaf first."""
        groups, group = [], []
        for frame_id in reversed(self.profile.stacks[stack_id].frames):
            group.append(frame_id)
            if self.profile.frames[frame_id].mapping not in self.inlined:
                groups.append(self.location(tuple(group)))
                group = []
        if group:
            groups.append(self.location(tuple(group)))
        if not groups:
            if NO_STACK not in self.location_ids:
                self.location_ids[NO_STACK] = len(self.location_ids) + 1
                self.locations.append(pb.Location(id=self.location_ids[NO_STACK]))
                self.locations[-1].line.add(function_id=self.function(NO_STACK))
            groups.append(self.location_ids[NO_STACK])
        return groups


def _add_mappings(message, profile, report, locations, strings, local_build_ids):
    """Mappings of the locations' frames. Addresses are DSO-relative: every mapping starts at 0."""
    limits, has_sources, has_inlines = defaultdict(int), set(), set()
    for location in locations.locations:
        limits[location.mapping_id] = max(limits[location.mapping_id], location.address + 1)
        if len(location.line) > 1:
            has_inlines.add(location.mapping_id)
    for frame in profile.frames:
        if frame.source:
            has_sources.add(frame.mapping + 1)
    # pprof shows mapping[0] as "the" binary: the ORT module is what this profile is about.
    for mapping in sorted(profile.mappings, key=lambda m: (m.kind != "ort", m.id)):
        mapping_id = mapping.id + 1
        if mapping_id not in limits:
            continue
        sources = mapping_id in has_sources
        message.mapping.add(
            id=mapping_id, memory_start=0, memory_limit=limits[mapping_id], filename=strings(mapping.path),
            build_id=strings(_build_id(mapping, report, local_build_ids) or ""), has_functions=True,
            has_filenames=sources, has_line_numbers=sources, has_inline_frames=mapping_id in has_inlines)


def build_message(profile, report, local_build_ids=True):
    """The profile.proto Profile message of `profile` and its `report`."""
    strings = _StringTable()
    message = pb.Profile()
    message.sample_type.add(type=strings("samples"), unit=strings("count"))
    message.sample_type.add(type=strings("cpu"), unit=strings("nanoseconds"))
    message.period_type.type = strings("cpu")
    message.period_type.unit = strings("nanoseconds")
    message.default_sample_type = strings("cpu")

    locations = _Locations(profile, strings)
    sessions, only_session = session_labels(report)
    total_ns = total_count = 0
    for tid, thread in sorted(profile.threads.items()):
        session = sessions.get(tid) or (only_session if thread.role in POOL_ROLES else None)
        for stack_id in sorted(thread.ns_by_stack):
            count, ns = thread.count_by_stack[stack_id], thread.ns_by_stack[stack_id]
            total_count, total_ns = total_count + count, total_ns + ns
            sample = message.sample.add(location_id=locations.stack(stack_id), value=[count, ns])
            sample.label.add(key=strings("thread_id"), num=tid)
            sample.label.add(key=strings("thread_role"), str=strings(thread.role))
            sample.label.add(key=strings("category"), str=strings(stack_category(profile, stack_id, thread.role)))
            if session:
                sample.label.add(key=strings("session"), str=strings(session))
    _add_mappings(message, profile, report, locations, strings, local_build_ids)
    message.location.extend(locations.locations)
    message.function.extend(locations.functions)

    message.period = round(total_ns / total_count) if total_count else 0
    message.duration_nanos = round((report.window_seconds or 0) * 1e9)
    start = profile.start_unix()
    if start is not None:
        message.time_nanos = round(start * 1e9)
    if report.ort.ort_version:
        message.comment.append(strings(f"onnxruntime {report.ort.ort_version}"))
    message.string_table.extend(strings.strings)
    return message


@dataclass(frozen=True)
class PprofExporter(Exporter):
    local_build_ids: bool = True   # read build-ids of the mapped files that are on this machine

    def write(self, profile, report, stream):
        data = build_message(profile, report, self.local_build_ids).SerializeToString()
        # filename="" and mtime=0: the same profile gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=stream, mtime=0) as compressed:
            compressed.write(data)


EXPORTER = PprofExporter("pprof", ".pb.gz", "pprof profile.proto, gzipped (go tool pprof, Pyroscope); "
                         "labels thread_id, thread_role, category, session", binary=True)
