"""Where a dispatcher returns, read from the module's code: the `ret` instructions to probe.

A `%return` uprobe cannot be used on a pybind11 dispatcher: it replaces the return address on
the stack with the kernel's trampoline, and when run() raises (ORT throws a C++ exception
inside the dispatcher, pybind11 catches it in its caller, `cpp_function::dispatcher`) the C++
unwinder finds no unwind information for the trampoline and calls std::terminate: the target
process aborts ("terminate called after throwing an instance of
'onnxruntime::python::InvalidArgument'"; seen on ORT 1.31.1 with perf 6.1 and kernel 6.18).
So the exits are probed as ordinary uprobes on the dispatcher's `ret` instructions: the stack
is not touched, an exception unwinds as usual (and no exit fires: the span stays open until
the next entry on that thread at the same stack pointer, see timing.py).

The dispatcher's own .eh_frame FDE is its hot part; GCC moves unlikely paths (exception
cleanups, error throws) to `.cold` parts with FDEs of their own, reached by direct jumps. The
exits are the `ret`s of the hot part; they are all of them when every jump that leaves the hot
part lands in a part that never returns (no `ret`, no jump anywhere but back into the hot part
or within itself, no indirect jump) and the hot part has no indirect jump: otherwise a tail call
or a jump table could leave by a way not seen, and `function_exits` refuses.
"""
import bisect
import mmap
from dataclasses import dataclass
from typing import List, Sequence, Set, Tuple, Union

from ...errors import InputError


class ExitsUnknown(InputError):
    """A dispatcher's exits cannot all be found from its code."""


@dataclass(frozen=True)
class Part:
    start: int
    size: int
    returns: Tuple[int, ...]          # addresses of its ret instructions
    jumps_out: Tuple[int, ...]        # targets of direct jumps leaving it
    indirect_jumps: Tuple[int, ...]   # addresses of jmp through a register or memory
    decoded: bool                     # the whole range decoded as instructions

    @property
    def end(self) -> int:
        return self.start + self.size


def _disassembler():
    import capstone
    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def decode_part(code: bytes, start: int) -> Part:
    """The returns and jumps of the function part whose bytes are `code`, at `start`."""
    returns: List[int] = []
    jumps_out: List[int] = []
    indirect: List[int] = []
    end = start + len(code)
    covered = start
    for address, size, mnemonic, operands in _disassembler().disasm_lite(code, start):
        covered = address + size
        if mnemonic in ("ret", "retq") or mnemonic.startswith("ret"):
            returns.append(address)
        elif mnemonic.startswith("j") or mnemonic.startswith("notrack j") or mnemonic.startswith("bnd j"):
            target = operands.strip()
            if target.startswith("0x"):
                value = int(target, 16)
                if not start <= value < end:
                    jumps_out.append(value)
            else:
                indirect.append(address)
    # trailing padding (int3, nop) after the last instruction does not count as undecoded
    tail = code[covered - start:]
    decoded = all(byte in (0xCC, 0x90, 0x00) for byte in tail)
    return Part(start, len(code), tuple(returns), tuple(jumps_out), tuple(indirect), decoded)


class CodeImage:
    """A file's code by virtual address, and its .eh_frame function ranges."""

    def __init__(self, data: Union[bytes, mmap.mmap], segments: Sequence[Tuple[int, int, int]], fde_ranges: Sequence[Tuple[int, int]]):
        self.data = data                                   # the whole file
        self.segments = list(segments)                      # (vaddr, file offset, file size) of PT_LOAD
        self.fde_ranges = sorted(fde_ranges)
        self.fde_starts = [start for start, _ in self.fde_ranges]

    def file_offset(self, vaddr: int) -> int:
        for base, offset, size in self.segments:
            if base <= vaddr < base + size:
                return vaddr - base + offset
        raise InputError(f"address {vaddr:#x} is in no loaded segment of the file")

    def vaddr(self, file_offset: int) -> int:
        for base, offset, size in self.segments:
            if offset <= file_offset < offset + size:
                return file_offset - offset + base
        raise InputError(f"file offset {file_offset:#x} is in no loaded segment of the file")

    def bytes_at(self, vaddr: int, size: int) -> bytes:
        offset = self.file_offset(vaddr)
        return self.data[offset:offset + size]

    def fde_at(self, vaddr: int) -> Tuple[int, int]:
        """(start, size) of the FDE covering `vaddr`; InputError outside all."""
        index = bisect.bisect_right(self.fde_starts, vaddr) - 1
        if index >= 0:
            start, size = self.fde_ranges[index]
            if vaddr < start + size:
                return start, size
        raise InputError(f"address {vaddr:#x} is in no .eh_frame function")

    def is_function_start(self, vaddr: int) -> bool:
        index = bisect.bisect_left(self.fde_starts, vaddr)
        return index < len(self.fde_starts) and self.fde_starts[index] == vaddr

    def part(self, start: int, size: int) -> Part:
        return decode_part(self.bytes_at(start, size), start)


def function_exits(image: CodeImage, entry: int, what: str = "the dispatcher") -> Tuple[int, ...]:
    """Virtual addresses of the `ret` instructions through which the function at `entry` (an
    FDE start) returns; ExitsUnknown when they cannot all be known from its code."""
    if not image.is_function_start(entry):
        raise ExitsUnknown(f"{what} at {entry:#x} is not a function start in .eh_frame")
    hot = image.part(*image.fde_at(entry))
    if not hot.decoded:
        raise ExitsUnknown(f"{what} at {entry:#x}: its code does not decode as x86-64 instructions to its end")
    if hot.indirect_jumps:
        raise ExitsUnknown(f"{what} at {entry:#x} has indirect jumps ({', '.join(f'{a:#x}' for a in hot.indirect_jumps[:3])}): "
                           "it could leave by a way ortprof does not see")
    if not hot.returns:
        raise ExitsUnknown(f"{what} at {entry:#x} has no ret instruction")
    visited: Set[int] = set()
    for target in hot.jumps_out:
        try:
            start, size = image.fde_at(target)
        except InputError:
            raise ExitsUnknown(f"{what} at {entry:#x} jumps to {target:#x}, outside every .eh_frame function") from None
        if start in visited:
            continue
        visited.add(start)
        cold = image.part(start, size)
        leaves = [t for t in cold.jumps_out if not hot.start <= t < hot.end]
        if cold.returns or cold.indirect_jumps or leaves or not cold.decoded:
            raise ExitsUnknown(f"{what} at {entry:#x} jumps to {target:#x}, in a function part that may return "
                               f"or leave elsewhere (a tail call?): its exits cannot all be known")
    return hot.returns
