"""Decoded samples -> Profile: interning frames and stacks as the samples stream by.

The only step that sees every sample. Everything derived from a stack (names,
raw CPU class, role evidence) is computed once per distinct stack: the per
sample work is two dict lookups and three array appends.
"""
import os
from typing import Dict, Tuple

from ..model.profile import FrameInfo, Mapping, Profile, StackInfo, ThreadSamples
from . import roles as roles_mod
from ..signals.futex.accumulator import caller_path
from .perfscript import Frame
from .stacks import classify_stack, module_kind

FUTEX_PATH_CACHE_LIMIT = 200_000   # futex entries repeat a handful of stacks thousands of times


class _Interner:
    def __init__(self, profile, symbolizer):
        self.profile = profile
        self.symbolizer = symbolizer
        self.frame_ids = {}      # perf Frame -> frame id
        self.mapping_ids = {}    # dso path -> mapping id
        self.names = {}          # perf Frame -> name (also for futex-only frames)

    def mapping(self, dso):
        mapping_id = self.mapping_ids.get(dso)
        if mapping_id is None:
            mapping_id = self.mapping_ids[dso] = len(self.profile.mappings)
            self.profile.mappings.append(Mapping(mapping_id, dso, module_kind(dso)))
        return mapping_id

    def name(self, frame):
        name = self.names.get(frame)
        if name is None:
            name = self.names[frame] = self.symbolizer.frame_name(frame)
        return name

    def frame(self, frame):
        frame_id = self.frame_ids.get(frame)
        if frame_id is None:
            name = self.name(frame)
            frame_id = self.frame_ids[frame] = len(self.profile.frames)
            symbolized = frame.symbol is not None or not name.startswith(os.path.basename(frame.dso) + "+0x")
            self.profile.frames.append(FrameInfo(frame_id, name, self.mapping(frame.dso), frame.addr, symbolized))
        return frame_id


def build_profile(samples, symbolizer, window=None):
    """Profile of the decoded `samples` (perfscript.Sample, frames leaf first) inside `window`."""
    profile = Profile(window=window)
    interner = _Interner(profile, symbolizer)
    stack_ids: Dict[Tuple[Frame, ...], int] = {}       # perf frames tuple -> stack id
    futex_path_of: Dict[Tuple[Frame, ...], str] = {}   # perf frames tuple -> caller path
    threads = profile.threads
    stacks = profile.stacks
    for sample in samples:
        if window and not (window[0] <= sample.time <= window[1]):   # both CLOCK_MONOTONIC (perf -k mono)
            continue
        profile.events[sample.event] += 1
        if profile.first_time is None:
            profile.first_time = sample.time
        profile.last_time = sample.time
        if sample.is_futex_enter:
            path = futex_path_of.get(sample.frames)
            if path is None:
                if len(futex_path_of) >= FUTEX_PATH_CACHE_LIMIT:
                    futex_path_of.clear()
                names = [interner.name(frame) for frame in sample.frames]
                path = futex_path_of[sample.frames] = caller_path(sample.frames, names)
            profile.futex.enter(sample, path)
            continue
        if sample.is_futex_exit:
            profile.futex.exit(sample)
            continue
        if not sample.is_cpu:
            continue
        frames = sample.frames
        stack_id = stack_ids.get(frames)
        if stack_id is None:
            names = [interner.name(frame) for frame in frames]
            stack_id = stack_ids[frames] = len(stacks)
            stacks.append(StackInfo(tuple(interner.frame(frame) for frame in reversed(frames)),
                                    classify_stack(frames, names, symbolizer),
                                    roles_mod.stack_evidence(frames, names)))
        thread = threads.get(sample.tid)
        if thread is None:
            thread = threads[sample.tid] = ThreadSamples(sample.tid)
        thread.comm = sample.comm
        thread.ns_by_stack[stack_id] += sample.period
        thread.count_by_stack[stack_id] += 1
        thread.times.append(sample.time)
        thread.stack_ids.append(stack_id)
        thread.weights_ns.append(sample.period)
        thread.evidence.add(stacks[stack_id].evidence)
    return profile
