"""Running ortprof as of another git revision, for benchmarks that compare a change with before it."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkout(revision, root):
    """A worktree of `revision` under `root` (made once); its path, to put first on PYTHONPATH."""
    tree = Path(root) / f"baseline-{revision}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision], check=True,
                       capture_output=True)
    return tree


def prune():
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)
