"""pybind11 function records, found in a process's memory without running any of its code.

pybind11 keeps one `function_record` per bound function (pybind11/attr.h). Its head has had
the same layout in every pybind11 release ortprof has seen (x86-64):

      0 char *name            (strdup'ed: "run")
      8 char *doc
     16 char *signature
     24 std::vector<argument_record> args    (begin, end, capacity; 32-byte elements)
     48 handle (*impl)(function_call &)      the dispatcher: converts the arguments, calls the
                                             bound C++ lambda, converts the result
     56 void *data[3]
     80 void (*free_data)(function_record *)
     88 return_value_policy policy           (uint8_t)
     89 flag bits: is_constructor, is_new_style_constructor, is_stateless, is_operator,
        is_method (bit 4), ...

Its tail differs between releases (KNOWN_LAYOUTS): eight flag bits (pybind11 2.x, ORT 1.15.1's
wheel) put nargs at 90 and def/scope/sibling/next at 96..120; a ninth flag bit (is_setter,
pybind11 3.x, ORT 1.31.1's wheel) moves nargs to 92 and the pointers to 104..128. Which one a
record has is told by `def`: pybind11 sets `def->ml_name = name`, so a PyMethodDef whose first
word is the record's name pointer must sit at that layout's `def` offset.

A record is recognised by all of: `impl` points into the module's executable mapping, the
head is sane (args begin <= end <= capacity, whole elements; a return value policy <= 7), the
name is an identifier, `def->ml_name` is the name pointer under exactly one known layout, and
`scope` is a type object whose tp_name (CPython's PyTypeObject: after ob_refcnt, ob_type and
ob_size, at +24) names the class. The caller then checks `impl` is a function start in
.eh_frame. Nothing here is specific to ORT but the class and method names the caller asks for.

The memory is read through `Memory` (reading /proc/PID/mem in dispatch.py; bytes built by the
tests).
"""
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Protocol, Sequence, Tuple

RECORD_SIZE = 136                 # bytes read per candidate (the longest known layout)
IMPL_OFFSET = 48
ARGUMENT_RECORD_SIZE = 32
_HEAD = struct.Struct("<QQQQQQQQQQQBB")     # name doc signature args(3) impl data(3) free_data policy flags
IS_METHOD_BIT = 1 << 4
MAX_POLICY = 7
TP_NAME_OFFSET = 24               # PyTypeObject: ob_refcnt, ob_type, ob_size, then tp_name
MAX_NAME = 256
_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*\Z")
_TYPE_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]*\Z")
CHUNK = 64 << 20                  # bytes of a region read and searched at once


@dataclass(frozen=True)
class Layout:
    """Where a function_record's tail fields are (the head is the same in all)."""
    name: str
    description: str
    nargs: int
    def_: int
    scope: int
    next: int


KNOWN_LAYOUTS: Tuple[Layout, ...] = (
    Layout("flags8", "8 flag bits: nargs at 90, def/scope/sibling/next at 96/104/112/120 "
           "(pybind11 2.x; ORT 1.15.1's wheel)", nargs=90, def_=96, scope=104, next=120),
    Layout("flags9", "9 flag bits (is_setter): nargs at 92, def/scope/sibling/next at 104/112/120/128 "
           "(pybind11 3.x; ORT 1.31.1's wheel)", nargs=92, def_=104, scope=112, next=128),
)
LAYOUTS_BY_NAME: Dict[str, Layout] = {layout.name: layout for layout in KNOWN_LAYOUTS}


class Memory(Protocol):
    def read(self, address: int, size: int) -> Optional[bytes]:
        """Up to `size` bytes at `address` (fewer at the end of a mapping); None if unreadable."""


@dataclass(frozen=True)
class RecordHead:
    name: int
    doc: int
    signature: int
    args_begin: int
    args_end: int
    args_capacity: int
    impl: int
    free_data: int
    policy: int
    flags: int

    @property
    def is_method(self) -> bool:
        return bool(self.flags & IS_METHOD_BIT)

    def sane(self) -> bool:
        """What holds for every function_record's head, whatever its tail."""
        if self.name == 0 or self.policy > MAX_POLICY:
            return False
        if not self.args_begin <= self.args_end <= self.args_capacity:
            return False
        if (self.args_begin == 0) != (self.args_capacity == 0):
            return False
        return (self.args_end - self.args_begin) % ARGUMENT_RECORD_SIZE == 0


def decode_head(data: bytes, offset: int = 0) -> RecordHead:
    (name, doc, signature, begin, end, capacity, impl, _d0, _d1, _d2, free_data, policy,
     flags) = _HEAD.unpack_from(data, offset)
    return RecordHead(name, doc, signature, begin, end, capacity, impl, free_data, policy, flags)


@dataclass(frozen=True)
class FunctionRecord:
    address: int
    name: str
    class_name: Optional[str]     # the scope's tp_name, last component ("InferenceSession")
    impl: int                     # address in the process
    nargs: int
    is_method: bool
    layout: str
    overload: int = 0             # 0: the head of its overload chain


def _u64(data: bytes, offset: int) -> int:
    return struct.unpack_from("<Q", data, offset)[0]


def _u16(data: bytes, offset: int) -> int:
    return struct.unpack_from("<H", data, offset)[0]


def read_c_string(memory: Memory, address: int, limit: int = MAX_NAME) -> Optional[bytes]:
    if address == 0:
        return None
    data = memory.read(address, limit)
    if not data:
        return None
    end = data.find(b"\0")
    return data[:end] if end >= 0 else None


def read_u64(memory: Memory, address: int) -> Optional[int]:
    data = memory.read(address, 8)
    return _u64(data, 0) if data is not None and len(data) == 8 else None


def _type_name(memory: Memory, scope: int) -> Optional[str]:
    pointer = read_u64(memory, scope + TP_NAME_OFFSET) if scope else None
    raw = read_c_string(memory, pointer) if pointer else None
    if raw is None or not _TYPE_NAME.match(raw):
        return None
    return raw.decode().rsplit(".", 1)[-1]


def match_layout(memory: Memory, data: bytes, name_pointer: int) -> Optional[Layout]:
    """The one known layout whose `def` points at a PyMethodDef naming this record; None when
    none or several do."""
    matches = []
    for layout in KNOWN_LAYOUTS:
        method_def = _u64(data, layout.def_)
        if method_def and read_u64(memory, method_def) == name_pointer:
            matches.append(layout)
    return matches[0] if len(matches) == 1 else None


def decode_record(memory: Memory, address: int, data: Optional[bytes] = None,
                  layout: Optional[Layout] = None, overload: int = 0) -> Optional[FunctionRecord]:
    """The function record at `address`, or None when the bytes there are not one. A head
    record's layout is found from its `def`; an overload further down a chain has no `def` of
    its own and is read with its head's `layout`."""
    if data is None:
        data = memory.read(address, RECORD_SIZE)
    if data is None or len(data) < RECORD_SIZE:
        return None
    head = decode_head(data)
    if not head.sane():
        return None
    raw_name = read_c_string(memory, head.name)
    if raw_name is None or not _IDENTIFIER.match(raw_name):
        return None
    if layout is None:
        layout = match_layout(memory, data, head.name)
        if layout is None:
            return None
    class_name = _type_name(memory, _u64(data, layout.scope)) if head.is_method else None
    return FunctionRecord(address, raw_name.decode(), class_name, head.impl, _u16(data, layout.nargs),
                          head.is_method, layout.name, overload)


def overloads(memory: Memory, record: FunctionRecord, limit: int = 32) -> List[FunctionRecord]:
    """The records chained after `record` by `next` (the same name's other overloads)."""
    layout = LAYOUTS_BY_NAME[record.layout]
    found: List[FunctionRecord] = []
    address = record.address
    for index in range(1, limit + 1):
        data = memory.read(address, RECORD_SIZE)
        following = _u64(data, layout.next) if data is not None and len(data) >= RECORD_SIZE else 0
        if not following:
            break
        chained = decode_record(memory, following, layout=layout, overload=index)
        if chained is None or chained.name != record.name:
            break
        found.append(chained)
        address = following
    return found


@dataclass
class ScanResult:
    records: List[FunctionRecord]     # recognised records (all classes), overloads included
    candidates: int = 0               # words pointing into the code that were looked at
    heads: int = 0                    # candidates whose head was sane
    scanned_bytes: int = 0
    regions: int = 0


def _candidate_offsets(chunk: bytes, code_ranges: Sequence[Tuple[int, int]]) -> Iterable[int]:
    """Byte offsets in `chunk` of the 8-aligned words that point into `code_ranges`."""
    import numpy as np
    words = np.frombuffer(chunk, dtype="<u8", count=len(chunk) // 8)
    hit = np.zeros(len(words), dtype=bool)
    for low, high in code_ranges:
        hit |= (words >= low) & (words < high)
    return (int(index) * 8 for index in np.flatnonzero(hit))


def scan(memory: Memory, regions: Sequence[Tuple[int, int]], code_ranges: Sequence[Tuple[int, int]],
         stop_after_class: Optional[str] = None, budget: int = 1 << 34) -> ScanResult:
    """Function records in `regions` whose impl points into `code_ranges`. With
    `stop_after_class`, the scan ends with the first region that held a record of that class
    (a module's classes are all made by its init, in one heap). At most `budget` bytes read."""
    result = ScanResult([])
    seen = set()
    for start, end in regions:
        found_class = False
        result.regions += 1
        for chunk_start in range(start, end, CHUNK):
            size = min(CHUNK, end - chunk_start)
            if result.scanned_bytes + size > budget:
                return result
            chunk = memory.read(chunk_start, size)
            if not chunk:
                continue
            result.scanned_bytes += len(chunk)
            for offset in _candidate_offsets(chunk, code_ranges):
                base = offset - IMPL_OFFSET
                if base < 0 and chunk_start + base < start:
                    continue
                result.candidates += 1
                address = chunk_start + base
                data = (chunk[base:base + RECORD_SIZE] if base >= 0 and base + RECORD_SIZE <= len(chunk)
                        else memory.read(address, RECORD_SIZE))
                if data is None or len(data) < RECORD_SIZE or not decode_head(data).sane():
                    continue
                result.heads += 1
                record = decode_record(memory, address, data)
                if record is None or address in seen:
                    continue
                seen.add(address)
                result.records.append(record)
                for chained in overloads(memory, record):
                    if chained.address not in seen:
                        seen.add(chained.address)
                        result.records.append(chained)
                if stop_after_class is not None and record.class_name == stop_after_class:
                    found_class = True
        if found_class:
            break
    return result
