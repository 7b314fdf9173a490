"""`ortprof build`: build ONNX Runtime from source with symbols; `ortprof build fetch-deps`."""
import json
from pathlib import Path

import click

from ..builder.checkout import CONFIGS, ORT_REPO_URL

PASSTHROUGH_KEY = "ortprof.build.passthrough"


class BuildGroup(click.Group):
    """A command that also has subcommands: flags after `--` go to ORT's build.py untouched."""

    def parse_args(self, ctx, args):
        if "--" in args:
            cut = args.index("--")
            ctx.meta[PASSTHROUGH_KEY] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True, soft_wrap=True)  # long paths stay on one line, copy-pasteable


@click.group(cls=BuildGroup, invoke_without_command=True, subcommand_metavar="[-- BUILD.PY FLAGS...]")
@click.option("--config", type=click.Choice(CONFIGS, case_sensitive=False), default="Debug", show_default=True,
              metavar="[" + "|".join(CONFIGS) + "]",
              help="CMake build type. RelWithDebInfo profiles truer; Debug names more (see above).")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path),
              help="An existing ONNX Runtime checkout. Default: build/onnxruntime, else the current directory.")
@click.option("--ref", metavar="TAG", help="Clone this ORT tag (v1.15.1 or 1.15.1) into <build-root>/onnxruntime.")
@click.option("--repo-url", default=ORT_REPO_URL, show_default=True, help="Where --ref clones from (a mirror).")
@click.option("--build-root", type=click.Path(file_okay=False, path_type=Path), default=Path("build"),
              show_default=True, help="Venvs, logs, manifests (and --ref clones) go here.")
@click.option("--jobs", "-j", type=int,
              help="Parallel compile jobs. Default: min(cores, available memory / 1.5 GiB per Debug job "
                   "or 2 GiB per RelWithDebInfo/Release/MinSizeRel job), so the compiler is not OOM-killed.")
@click.option("--with-tests", is_flag=True, help="Also compile ORT's unit tests and googletest (much longer; "
                                                 "off by default, they are not needed for profiling).")
@click.option("--ccache/--no-ccache", default=None, help="Compile through ccache [default: when installed].")
@click.option("--frame-pointers/--no-frame-pointers", default=True, show_default=True,
              help="Compile with -fno-omit-frame-pointer so perf can unwind with fp.")
@click.option("--deps-mirror", type=click.Path(file_okay=False, path_type=Path),
              help="Offline: take the downloads this build makes (the cmake/deps.txt entries a CPU build fetches, "
                   "and URLs hard-coded in cmake files such as eigen's) from this directory (<name>.zip or the "
                   "URL's file name), digest-checked. Only missing needed ones stop the build. The files are "
                   "rewritten, the originals kept (--restore-deps).")
@click.option("--eigen-path", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Use this Eigen source tree instead of downloading eigen (passed to build.py as "
                   "--use_preinstalled_eigen --eigen_path DIR).")
@click.option("--trust-mirror", is_flag=True,
              help="Accept mirror archives whose digest differs from the declared one (e.g. made by `git archive`).")
@click.option("--restore-deps", is_flag=True, help="Put the files --deps-mirror rewrote (cmake/deps.txt, cmake files) back as shipped and exit.")
@click.option("--build-venv", type=click.Path(file_okay=False, path_type=Path),
              help="Use this existing venv for the build tools as is, instead of creating <build-root>/venv-build.")
@click.option("--python", "python", default=None, metavar="EXE",
              help="Interpreter to build the wheel for [default: the one running ortprof].")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="Install the wheel into this venv [default: <build-root>/venv-<config>].")
@click.option("--install", "install_current", is_flag=True,
              help="Install the wheel into the current environment instead of a venv.")
@click.option("--dry-run", is_flag=True, help="Run the preflight, print the exact commands, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (or, with --dry-run, the plan) as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Stream the build output instead of a progress bar.")
@click.pass_context
def command(ctx, config, source, ref, repo_url, build_root, jobs, with_tests, ccache, frame_pointers, deps_mirror,
            eigen_path, trust_mirror, restore_deps, build_venv, python, venv, install_current, dry_run, as_json, verbose):
    """Build ONNX Runtime from source with symbols and Python bindings.

    One command from a checkout (or a tag) to an installed wheel: preflight
    checks, a build venv with a new-enough cmake from PyPI, ORT's build.sh with
    the flags this checkout's build.py supports, a progress bar with ETA, the
    wheel installed into <build-root>/venv-<config>, and a manifest that
    `ortprof record --ort-build <config>` and `ortprof report` use.
    Run the same command again to resume an interrupted or failed build.

    Debug (the default) gives every function, inlined frame and source line,
    but -O0 code spends its time differently from the released wheel.
    RelWithDebInfo (-O2 -g) keeps symbols and lines and profiles like the
    release build: prefer it for numbers you will act on.

    \b
    Examples:
      ortprof build --source ~/onnxruntime --dry-run
      ortprof build --ref v1.15.1 --config RelWithDebInfo
      ortprof build --source ~/onnxruntime --deps-mirror ~/ort-deps   # offline
      ortprof build --source ~/onnxruntime --deps-mirror ~/ort-deps --eigen-path ~/eigen
      ortprof build --source ~/onnxruntime -- --use_dnnl             # extra build.py flags
      ortprof build fetch-deps --source ~/onnxruntime ~/ort-deps
    """
    if ctx.invoked_subcommand is not None:
        return
    import sys

    from ..builder import orchestrate
    from ..builder.plan import BuildOptions

    options = BuildOptions(config=config, source=source, ref=ref, repo_url=repo_url, build_root=build_root,
                           jobs=jobs, with_tests=with_tests, ccache=ccache, frame_pointers=frame_pointers,
                           deps_mirror=deps_mirror, trust_mirror=trust_mirror, eigen_path=eigen_path,
                           build_venv=build_venv,
                           python=python or sys.executable, venv=venv, install_current=install_current,
                           passthrough=list(ctx.meta.get(PASSTHROUGH_KEY, [])), verbose=verbose)
    console = _stderr_console()
    if restore_deps:
        orchestrate.restore_deps(options, console)
        return
    if dry_run:
        script, plan, checks = orchestrate.dry_run(options, console)
        if as_json:
            click.echo(json.dumps(_plan_json(plan, checks), indent=2))
        else:
            click.echo(script, nl=False)
        return
    manifest = orchestrate.run_build(options, console)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))


def _plan_json(plan, checks):
    return {
        "schema": "ortprof.build-plan/1",
        "config": plan.config,
        "ort_version": plan.ort_version,
        "source": str(plan.source_dir),
        "jobs": plan.jobs,
        "jobs_reason": plan.jobs_reason,
        "build_flags": plan.build_flags,
        "dropped_flags": plan.dropped_flags,
        "flags_checked": plan.flags_checked,
        "steps": [{"kind": step.kind, "title": step.title, "command": [str(arg) for arg in step.command],
                   "env": step.env, "cwd": str(step.cwd) if step.cwd else None, "shell": step.shell(),
                   "done": step.done} for step in plan.steps],
        "manifest": str(plan.manifest_path),
        "preflight": [check.to_json() for check in checks],
    }


@command.command("fetch-deps")
@click.option("--source", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="The ONNX Runtime checkout whose cmake/deps.txt and cmake files list the archives.")
@click.argument("mirror", type=click.Path(file_okay=False, path_type=Path))
@click.option("--only-needed/--all", "only_needed", default=True, show_default=True,
              help="Only what a Linux CPU build with Python bindings fetches (15 archives for 1.15.1), or "
                   "every deps.txt entry and cmake-file URL (all platforms and options: 43 for 1.15.1).")
@click.option("--with-tests", is_flag=True, help="Also what `ortprof build --with-tests` fetches (googletest).")
@click.option("--json", "as_json", is_flag=True, help="Print what was fetched as JSON.")
def fetch_deps_command(source, mirror, only_needed, with_tests, as_json):
    """Download ONNX Runtime's dependency archives into MIRROR (on a machine with network).

    Reads cmake/deps.txt and the URLs the checkout's cmake files download
    themselves (eigen in ORT 1.15). Archives are named <name>.<ext> and
    checked against the declared digests; ones already present and matching
    are kept, so it resumes. Copy MIRROR to the offline machine and build
    there with --deps-mirror MIRROR.
    """
    from ..builder import orchestrate

    results = orchestrate.fetch_deps(source, mirror, _stderr_console(), everything=not only_needed,
                                     with_tests=with_tests)
    if as_json:
        click.echo(json.dumps({
            "schema": "ortprof.deps-mirror/1",
            "mirror": str(Path(mirror).resolve()),
            "dependencies": [{"name": r.dep.name, "url": r.dep.url, "sha1": r.dep.digest if r.dep.algorithm ==
                              "sha1" else None, "digest": r.dep.digest, "algorithm": r.dep.algorithm,
                              "declared_in": r.dep.where(Path(source).resolve()), "status": r.status,
                              "path": str(r.path) if r.path else None, "size": r.size} for r in results],
        }, indent=2))
