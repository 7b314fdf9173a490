"""Where ORT spin-waits, found by decoding machine code; and whether a sample is spin.

ORT's thread pool spins with `onnxruntime::concurrency::SpinPause()`, which
executes PAUSE (or TPAUSE on CPUs with WAITPKG). Two generations exist:

- ORT >= ~1.23: SpinPause is an out-of-line function (a *spin primitive*); the
  spin loops that call it live in WorkerLoop, RunInParallel, ...
- ORT <= ~1.22: PAUSE is inlined into each spin loop.

Sites are found by decoding each function's instructions with capstone, so
only real PAUSE/TPAUSE instructions count (a byte scan for `f3 90` also hits
operand bytes of other instructions). Byte patterns only select which
functions to decode; `scan_all=True` decodes every function to verify that.

A spin loop is found on the control-flow graph of the function holding the
PAUSE (or the call to a spin primitive): the enclosing natural loops, from the
innermost outwards, as long as a loop neither blocks (calls a wait primitive:
condition_variable::wait, pthread_cond_*wait, sem_*wait, syscall, ...) nor
runs work (calls through a function pointer held in memory: a task or
std::function invocation). ORT 1.31's WorkerLoop needs the second level (the
innermost is its SpinPause back-off loop, the third its blocking/task loop).
If even the innermost loop runs work (1.15's parallel-section worker spins
and runs loop chunks in one loop), the spin region is the cycle through the
PAUSE that avoids the blocks making those calls.

A sampled leaf is spin if (a) it lies in a spin primitive, (b) it lies in a
spin region (software cpu-clock samples skid to the instruction after PAUSE or
a few further), or (c) it lies in a function called directly from inside a
spin region (the queue polling and work stealing done between pauses) and the
caller's return address is in that region.
"""
import bisect
import mmap
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple


from .functions import read_import_slots

PAUSE_MNEMONICS = frozenset({"pause", "tpause", "umwait"})
# Candidate selection only: PAUSE is f3 90; TPAUSE/UMWAIT/UMONITOR are
# (66|f2|f3) 0f ae /6 with a register operand (ModRM f0-f7).
_CANDIDATE_BYTES = re.compile(rb"\xf3\x90|\x0f\xae[\xf0-\xf7]")
# A wrapper of a spin primitive (Debug: SpinPause calling _mm_pause) is small;
# follow at most this many levels of them.
_MAX_WRAPPER_SIZE = 256
_MAX_WRAPPER_DEPTH = 2
_SCAN_CHUNK = 8 << 20
_END_OF_BLOCK = frozenset({"ret", "retf", "ud2", "hlt", "int3", "iretq", "sysret"})
# Imports that block the calling thread: a loop calling one is not a spin loop.
BLOCKING_IMPORT = re.compile(
    r"condition_variable.*wait|^pthread_cond_(timed|clock)?wait$|^sem_(timed|clock)?wait$"
    r"|^(syscall|futex|nanosleep|clock_nanosleep|usleep|sleep|poll|ppoll|select|epoll_wait|pthread_join)$")
_RIP_RELATIVE = re.compile(r"^qword ptr \[rip ([+-]) (0x[0-9a-f]+|\d+)\]$")

# Rule names, as reported by SpinMap.classify().
SPIN_PRIMITIVE = "spin-primitive"
SPIN_LOOP = "spin-loop"
SPIN_LOOP_CALLEE = "spin-loop-callee"


class CodeReader:
    """Bytes of the executable PT_LOAD segments of an ELF file, by virtual address."""

    def __init__(self, elf, stream):
        self.segments = []  # (vaddr, file offset, size)
        for segment in elf.iter_segments():
            if segment["p_type"] == "PT_LOAD" and segment["p_flags"] & 1:
                self.segments.append((segment["p_vaddr"], segment["p_offset"], segment["p_filesz"]))
        self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)

    def close(self):
        self._map.close()

    def read(self, vaddr, size) -> bytes:
        for base, offset, length in self.segments:
            if base <= vaddr < base + length:
                size = min(size, base + length - vaddr)
                begin = offset + vaddr - base
                return self._map[begin:begin + size]
        return b""

    def find_all(self, pattern):
        """Virtual addresses where the compiled regex `pattern` matches in executable code."""
        for base, offset, length in self.segments:
            for match in pattern.finditer(self._map, offset, offset + length):
                yield base + match.start() - offset

    def branch_sites(self, target):
        """Addresses whose bytes encode a direct call/jmp/jcc to `target`.

        Candidates only (the bytes may sit inside other instructions): the
        caller confirms by decoding. rel32 forms are searched everywhere with
        numpy, in chunks to bound memory; rel8 forms (short jmp/jcc) can only
        reach +-128 bytes."""
        import numpy  # only needed while building, not for lookups

        found = []
        for base, offset, length in self.segments:
            for chunk_start in range(0, max(length - 5, 0), _SCAN_CHUNK):
                # 5 bytes of overlap: a 6-byte jcc starting at the chunk's last byte.
                count = min(_SCAN_CHUNK + 5, length - chunk_start)
                code = numpy.frombuffer(self._map, dtype=numpy.uint8, count=count, offset=offset + chunk_start)
                head = code[:-5]
                # (opcode positions, opcode length): call/jmp rel32, then jcc rel32 (0f 8x).
                forms = ((numpy.flatnonzero((head == 0xE8) | (head == 0xE9)), 1),
                         (numpy.flatnonzero((head == 0x0F) & ((code[1:-4] & 0xF0) == 0x80)), 2))
                chunk_vaddr = base + chunk_start
                for at, opcode_length in forms:
                    rel_at = at + opcode_length
                    rel = code[rel_at].astype(numpy.int64)
                    for byte in (1, 2, 3):
                        rel |= code[rel_at + byte].astype(numpy.int64) << (8 * byte)
                    rel = numpy.where(rel >= 1 << 31, rel - (1 << 32), rel)
                    found.extend((chunk_vaddr + at[(chunk_vaddr + rel_at + 4 + rel) == target]).tolist())
                del code, head, forms
            for addr in range(max(target - 130, base), min(target + 128, base + length - 1)):
                opcode = self._map[offset + addr - base]
                if opcode == 0xEB or 0x70 <= opcode <= 0x7F:
                    rel = self._map[offset + addr - base + 1]
                    if addr + 2 + (rel - 256 if rel > 127 else rel) == target:
                        found.append(addr)
        return sorted(set(found))


@dataclass
class Instruction:
    addr: int
    size: int
    mnemonic: str
    operand: str

    @property
    def end(self):
        return self.addr + self.size

    def direct_target(self) -> Optional[int]:
        if self.operand.startswith("0x"):
            try:
                return int(self.operand, 16)
            except ValueError:
                return None
        return None

    @property
    def is_jump(self):
        return self.mnemonic.startswith("j") or self.mnemonic.startswith("loop")

    @property
    def is_call(self):
        return self.mnemonic == "call"

    def rip_slot(self) -> Optional[int]:
        """Address of a `[rip + disp]` memory operand (a GOT slot for `call`/`jmp`)."""
        match = _RIP_RELATIVE.match(self.operand)
        if match is None:
            return None
        disp = int(match.group(2), 0)
        return self.end + disp if match.group(1) == "+" else self.end - disp

    @property
    def calls_through_memory(self):
        return self.is_call and "[" in self.operand


_disassembler = None


def _x86_64_disassembler():
    # capstone is loaded on first decode only: a report on a cached build-id never needs it.
    global _disassembler
    if _disassembler is None:
        import capstone
        _disassembler = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        _disassembler.skipdata = True
    return _disassembler


def decode(code: bytes, start: int) -> List[Instruction]:
    """Linear decode of one function's bytes (prefixes such as `notrack`/`bnd` dropped)."""
    return [Instruction(addr, size, mnemonic.rsplit(" ", 1)[-1], operand)
            for addr, size, mnemonic, operand in _x86_64_disassembler().disasm_lite(code, start)]


class FunctionCode:
    """Control-flow graph of one decoded function, with its natural loops."""

    def __init__(self, start, instructions: Sequence[Instruction]):
        self.start = start
        self.instructions = list(instructions)
        self.end = self.instructions[-1].end if self.instructions else start
        self._addrs = [insn.addr for insn in self.instructions]
        self._build_blocks()
        self._loops = None

    def instruction_at(self, addr) -> Optional[Instruction]:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i >= 0 and self.instructions[i].addr == addr:
            return self.instructions[i]
        return None

    def _inside(self, addr):
        return addr is not None and self.start <= addr < self.end

    def _build_blocks(self):
        leaders = {self.start}
        for insn in self.instructions:
            if insn.is_jump or insn.mnemonic in _END_OF_BLOCK:
                leaders.add(insn.end)
                target = insn.direct_target()
                if insn.is_jump and self._inside(target):
                    leaders.add(target)
        # Only leaders on instruction boundaries (a target inside an
        # instruction means data or overlapping code: ignore it).
        boundaries = set(self._addrs)
        self.block_starts = sorted(a for a in leaders if a in boundaries)
        self.block_ends = self.block_starts[1:] + [self.end]
        index = {addr: i for i, addr in enumerate(self.block_starts)}
        self.successors = [[] for _ in self.block_starts]
        for i, (begin, end) in enumerate(zip(self.block_starts, self.block_ends)):
            last = self.instruction_at(self._last_addr(end))
            if last is None:
                continue
            target = last.direct_target()
            if last.is_jump:
                if self._inside(target) and target in index:
                    self.successors[i].append(index[target])
                if last.mnemonic != "jmp" and i + 1 < len(self.block_starts):
                    self.successors[i].append(i + 1)
            elif last.mnemonic not in _END_OF_BLOCK and i + 1 < len(self.block_starts):
                self.successors[i].append(i + 1)

    def _last_addr(self, block_end):
        i = bisect.bisect_left(self._addrs, block_end) - 1
        return self._addrs[i] if i >= 0 else None

    def block_of(self, addr) -> Optional[int]:
        i = bisect.bisect_right(self.block_starts, addr) - 1
        if i >= 0 and addr < self.block_ends[i]:
            return i
        return None

    def _dominators(self):
        """Immediate dominators of blocks reachable from the entry (Cooper-Harvey-Kennedy)."""
        count = len(self.block_starts)
        order, seen, stack = [], [False] * count, [(0, 0)]
        seen[0] = True
        while stack:    # iterative DFS for post-order
            node, child = stack.pop()
            if child < len(self.successors[node]):
                stack.append((node, child + 1))
                succ = self.successors[node][child]
                if not seen[succ]:
                    seen[succ] = True
                    stack.append((succ, 0))
            else:
                order.append(node)
        rpo = order[::-1]
        rank = {node: i for i, node in enumerate(rpo)}
        predecessors = [[] for _ in range(count)]
        for node in rpo:
            for succ in self.successors[node]:
                predecessors[succ].append(node)
        idom = {0: 0}

        def intersect(a, b):
            while a != b:
                while rank[a] > rank[b]:
                    a = idom[a]
                while rank[b] > rank[a]:
                    b = idom[b]
            return a

        changed = True
        while changed:
            changed = False
            for node in rpo[1:]:
                done = [p for p in predecessors[node] if p in idom]
                if not done:
                    continue
                new = done[0]
                for p in done[1:]:
                    new = intersect(p, new)
                if idom.get(node) != new:
                    idom[node] = new
                    changed = True
        return idom, predecessors

    def loops(self) -> List[frozenset]:
        """Natural loops as sets of block indexes (back edges to one header merged)."""
        if self._loops is not None:
            return self._loops
        if not self.block_starts:
            self._loops = []
            return self._loops
        idom, predecessors = self._dominators()

        def dominates(a, b):
            while True:
                if a == b:
                    return True
                if b == 0 or b not in idom:
                    return False
                b = idom[b]

        bodies: Dict[int, set] = {}
        for node in idom:
            for header in self.successors[node]:
                if header in idom and dominates(header, node):
                    body = bodies.setdefault(header, {header})
                    work = [node]
                    while work:
                        n = work.pop()
                        if n not in body:
                            body.add(n)
                            work.extend(predecessors[n])
        self._loops = [frozenset(body) for body in bodies.values()]
        return self._loops

    def loops_containing(self, addr) -> List[frozenset]:
        """Natural loops containing `addr`, innermost first."""
        block = self.block_of(addr)
        if block is None:
            return []
        return sorted((body for body in self.loops() if block in body), key=len)

    def cycle_through(self, block, allowed) -> frozenset:
        """Blocks of `allowed` on a cycle through `block` that stays inside `allowed`."""
        allowed = set(allowed) | {block}
        forward = self._reach(block, allowed, self.successors)
        predecessors = [[] for _ in self.block_starts]
        for node in allowed:
            for succ in self.successors[node]:
                predecessors[succ].append(node)
        backward = self._reach(block, allowed, predecessors)
        return frozenset(forward & backward)

    @staticmethod
    def _reach(start, allowed, edges):
        seen, work = {start}, [start]
        while work:
            for nxt in edges[work.pop()]:
                if nxt in allowed and nxt not in seen:
                    seen.add(nxt)
                    work.append(nxt)
        return seen

    def block_instructions(self, block) -> List[Instruction]:
        begin = bisect.bisect_left(self._addrs, self.block_starts[block])
        end = bisect.bisect_left(self._addrs, self.block_ends[block])
        return self.instructions[begin:end]

    def ranges(self, blocks) -> List[Tuple[int, int]]:
        """Blocks as sorted address ranges, adjacent ones merged."""
        merged = []
        for i in sorted(blocks):
            begin, end = self.block_starts[i], self.block_ends[i]
            if merged and merged[-1][1] == begin:
                merged[-1][1] = end
            else:
                merged.append([begin, end])
        return [tuple(r) for r in merged]

    def direct_callees(self, blocks) -> List[int]:
        return sorted({insn.direct_target() for block in blocks for insn in self.block_instructions(block)
                       if insn.is_call and insn.direct_target() is not None})


class Imports:
    """Names of the imported functions a call instruction can reach (PLT stubs, GOT slots)."""

    def __init__(self, elf, code: "CodeReader"):
        self.slots = read_import_slots(elf)
        self.stubs = {}
        for section in elf.iter_sections():
            if not section.name.startswith(".plt") or section.header.sh_type == "SHT_NOBITS":
                continue
            base, entry = section["sh_addr"], 16
            for insn in decode(code.read(base, section["sh_size"]), base):
                slot = insn.rip_slot() if insn.mnemonic == "jmp" else None
                if slot in self.slots:
                    self.stubs[base + (insn.addr - base) // entry * entry] = self.slots[slot]

    def callee_name(self, insn: Instruction) -> Optional[str]:
        target = insn.direct_target()
        if target is not None:
            return self.stubs.get(target)
        slot = insn.rip_slot()
        return self.slots.get(slot) if slot is not None else None

    def ends_spin(self, insn: Instruction) -> bool:
        """A call that blocks (a wait import) or runs work (through a pointer in memory)."""
        if not insn.is_call:
            return False
        name = self.callee_name(insn)
        if name is not None:
            return BLOCKING_IMPORT.search(name) is not None
        return insn.calls_through_memory


def spin_region(function: FunctionCode, site, imports: Imports) -> Optional[frozenset]:
    """The blocks that spin around `site` (see the module docstring), or None if not in a loop."""
    levels = function.loops_containing(site)
    if not levels:
        return None
    stops = {block for block in levels[-1]
             if any(imports.ends_spin(insn) for insn in function.block_instructions(block))}
    chosen = None
    for body in levels:
        if body & stops:
            break
        chosen = body
    if chosen is None:
        chosen = function.cycle_through(function.block_of(site), levels[0] - stops)
    return chosen


@dataclass
class SpinSite:
    addr: int
    mnemonic: str           # pause | tpause | umwait
    function_start: int
    in_loop: bool           # False: the pause ends a straight path to a return (a spin primitive)

    def to_json(self):
        return [self.addr, self.mnemonic, self.function_start, self.in_loop]


@dataclass
class SpinLoop:
    function_start: int     # the function that spins (WorkerLoop, RunInParallel, ...)
    site: int               # the PAUSE, or the call to the spin primitive
    ranges: List[Tuple[int, int]]
    callees: List[int]      # functions called directly from inside the loop

    def to_json(self):
        return {"function_start": self.function_start, "site": self.site,
                "ranges": [list(r) for r in self.ranges], "callees": self.callees}

    @classmethod
    def from_json(cls, data):
        return cls(data["function_start"], data["site"],
                   [tuple(r) for r in data["ranges"]], list(data["callees"]))


@dataclass
class SpinPrimitive:
    start: int
    end: int
    call_sites: List[int] = field(default_factory=list)

    def to_json(self):
        return {"start": self.start, "end": self.end, "call_sites": self.call_sites}


class SpinMap:
    """Spin sites of one binary and the test `classify(leaf, caller)` for samples."""

    def __init__(self, sites, primitives, loops):
        self.sites: List[SpinSite] = list(sites)
        self.primitives: List[SpinPrimitive] = list(primitives)
        self.loops: List[SpinLoop] = list(loops)
        self._primitive_starts = [p.start for p in self.primitives]
        # Flattened loop ranges for bisect; loops in one function may nest,
        # so several ranges can contain one address: keep the innermost
        # (shortest) first by sorting on (start, size).
        spans = []
        for number, loop in enumerate(self.loops):
            for begin, end in loop.ranges:
                spans.append((begin, end, number))
        spans.sort(key=lambda s: (s[0], s[1] - s[0]))
        self._span_starts = [s[0] for s in spans]
        self._spans = spans
        self._longest_span = max((s[1] - s[0] for s in spans), default=0)

    @property
    def style(self) -> str:
        """`out-of-line` (a SpinPause function), `inlined` (PAUSE in the loops) or `none`."""
        if self.primitives:
            return "out-of-line"
        return "inlined" if self.loops else "none"

    @property
    def spin_functions(self) -> List[int]:
        """Starts of functions that contain a spin loop (WorkerLoop-equivalents, RunInParallel, ...)."""
        return sorted({loop.function_start for loop in self.loops})

    def primitive_at(self, addr) -> Optional[SpinPrimitive]:
        i = bisect.bisect_right(self._primitive_starts, addr) - 1
        if i >= 0 and addr < self.primitives[i].end:
            return self.primitives[i]
        return None

    def loops_at(self, addr) -> List[SpinLoop]:
        """Spin loops with a range containing `addr`, innermost first."""
        found = []
        i = bisect.bisect_right(self._span_starts, addr) - 1
        while i >= 0 and addr - self._span_starts[i] < self._longest_span:
            begin, end, number = self._spans[i]
            if begin <= addr < end:
                found.append(self.loops[number])
            i -= 1
        found.sort(key=lambda loop: sum(e - b for b, e in loop.ranges))
        return found

    def classify(self, leaf, caller=None, leaf_function_start=None) -> Optional[Tuple[str, Optional[int]]]:
        """(rule, spinning function start) if a sample at `leaf` is spin-wait, else None.

        `caller` is the next frame's return address when it is in the same
        binary; `leaf_function_start` the start of the function holding the
        leaf (needed for rule c). The spinning function lets callers tell the
        worker's idle spin (WorkerLoop) from the caller's end-of-section spin
        (RunInParallel) by stack shape."""
        if self.primitive_at(leaf) is not None:
            spinner = None
            if caller is not None:
                loops = self.loops_at(caller)
                spinner = loops[0].function_start if loops else None
            return SPIN_PRIMITIVE, spinner
        loops = self.loops_at(leaf)
        if loops:
            return SPIN_LOOP, loops[0].function_start
        if caller is not None and leaf_function_start is not None:
            for loop in self.loops_at(caller):
                if leaf_function_start in loop.callees:
                    return SPIN_LOOP_CALLEE, loop.function_start
        return None

    def to_json(self):
        return {"sites": [s.to_json() for s in self.sites],
                "primitives": [p.to_json() for p in self.primitives],
                "loops": [loop.to_json() for loop in self.loops]}

    @classmethod
    def from_json(cls, data):
        sites = [SpinSite(*s) for s in data["sites"]]
        primitives = [SpinPrimitive(p["start"], p["end"], list(p["call_sites"])) for p in data["primitives"]]
        loops = [SpinLoop.from_json(d) for d in data["loops"]]
        return cls(sites, primitives, loops)


def _decode_function(code: CodeReader, start, size) -> FunctionCode:
    return FunctionCode(start, decode(code.read(start, size), start))


def _code_ranges(functions, code: CodeReader):
    """(start, size) to decode: every function, plus executable gaps no FDE covers."""
    ranges = []
    for base, _, length in code.segments:
        cursor = base
        end = base + length
        i = bisect.bisect_left(functions.starts, base)
        while i < len(functions.starts) and functions.starts[i] < end:
            start, size = functions.starts[i], functions.sizes[i]
            if start > cursor:
                ranges.append((cursor, start - cursor))
            ranges.append((start, size))
            cursor = max(cursor, start + size)
            i += 1
        if cursor < end:
            ranges.append((cursor, end - cursor))
    return ranges


def _containing_range(ranges_starts, ranges, addr):
    i = bisect.bisect_right(ranges_starts, addr) - 1
    if i >= 0 and addr < ranges[i][0] + ranges[i][1]:
        return ranges[i]
    return None


def find_spin_map(elf, stream, functions, scan_all=False) -> SpinMap:
    """Decode the binary's code and build its SpinMap.

    `functions` is the FunctionIndex of the same binary; `stream` its open file."""
    if elf["e_machine"] != "EM_X86_64":
        return SpinMap([], [], [])   # PAUSE/TPAUSE are x86 instructions
    code = CodeReader(elf, stream)
    try:
        imports = Imports(elf, code)
        ranges = _code_ranges(functions, code)
        starts = [r[0] for r in ranges]
        if scan_all:
            candidates = ranges
        else:
            hits = {_containing_range(starts, ranges, a) for a in code.find_all(_CANDIDATE_BYTES)}
            candidates = sorted(r for r in hits if r is not None)

        decoded: Dict[int, FunctionCode] = {}
        sites = []
        for start, size in candidates:
            function = _decode_function(code, start, size)
            pauses = [insn for insn in function.instructions if insn.mnemonic in PAUSE_MNEMONICS]
            if pauses:
                decoded[start] = function
            for insn in pauses:
                in_loop = bool(function.loops_containing(insn.addr))
                sites.append(SpinSite(insn.addr, insn.mnemonic, start, in_loop))

        def decoded_at(addr):
            found = _containing_range(starts, ranges, addr)
            if found is None:
                return None
            if found[0] not in decoded:
                decoded[found[0]] = _decode_function(code, *found)
            return decoded[found[0]]

        loops = [_spin_loop(decoded[site.function_start], site.addr, imports)
                 for site in sites if site.in_loop]
        # A function whose pauses are all outside loops is a spin primitive:
        # its callers' loops are the spin loops. A small function calling a
        # primitive outside any loop wraps it (Debug builds: SpinPause ->
        # _mm_pause) and is a primitive too.
        by_function: Dict[int, List[SpinSite]] = {}
        for site in sites:
            by_function.setdefault(site.function_start, []).append(site)
        frontier = [start for start, own in sorted(by_function.items())
                    if not any(site.in_loop for site in own)]
        primitives: Dict[int, SpinPrimitive] = {}
        for _ in range(_MAX_WRAPPER_DEPTH + 1):
            wrappers = []
            for start in frontier:
                primitive = primitives[start] = SpinPrimitive(start, decoded[start].end)
                for at in code.branch_sites(start):
                    caller = decoded_at(at)
                    insn = caller.instruction_at(at) if caller is not None else None
                    if insn is None or insn.direct_target() != start or not (insn.is_call or insn.is_jump):
                        continue    # the bytes were inside another instruction
                    primitive.call_sites.append(at)
                    if caller.loops_containing(at):
                        loops.append(_spin_loop(caller, at, imports))
                    elif caller.end - caller.start <= _MAX_WRAPPER_SIZE and caller.start not in primitives:
                        wrappers.append(caller.start)
            frontier = sorted(set(wrappers))
        primitives = sorted(primitives.values(), key=lambda p: p.start)
        primitive_starts = {p.start for p in primitives}
        for loop in loops:
            loop.callees = [c for c in loop.callees if c not in primitive_starts]
        # Several PAUSEs of one loop (TPAUSE and PAUSE variants) give one loop.
        unique = {}
        for loop in sorted(loops, key=lambda loop: loop.site):
            unique.setdefault((loop.function_start, tuple(loop.ranges)), loop)
        return SpinMap(sorted(sites, key=lambda s: s.addr), primitives, list(unique.values()))
    finally:
        code.close()


def _spin_loop(function: FunctionCode, site, imports: Imports) -> SpinLoop:
    region = spin_region(function, site, imports)
    return SpinLoop(function.start, site, function.ranges(region), function.direct_callees(region))
