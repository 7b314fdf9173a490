"""Reading small kernel files (/proc, /sys): missing or unreadable means None."""


def read_text(path, default=None):
    try:
        with open(path) as stream:
            return stream.read()
    except (OSError, UnicodeDecodeError):
        return default


def read_int(path):
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def thread_schedstats(pid):
    """{tid: [ns on CPU, ns waiting on a run queue, timeslices]} of each thread of `pid` from
    /proc/PID/task/TID/schedstat, or None when the process is gone. A thread that exits meanwhile
    is left out (its time is only in the process's total)."""
    import os
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found = {}
    for tid in tids:
        values = (read_text(f"/proc/{pid}/task/{tid}/schedstat") or "").split()[:3]
        try:
            found[int(tid)] = [int(value) for value in values]
        except ValueError:
            continue
        if len(found[int(tid)]) < 3:
            del found[int(tid)]
    return found
