"""Runs a build plan end to end: preflight, clone, venvs, deps mirror, build.sh, install, manifest."""
import fcntl
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..checks import failures
from ..errors import EXIT_INTERRUPTED, EnvironmentProblem, InputError, OrtprofError, WorkloadError
from . import checkout as checkouts
from . import deps_mirror, preflight, venvs
from .manifest import SCHEMA, find_native_module, native_module_facts, write_json, write_state
from .plan import make_plan, render_script, resolve_source
from .progress import BuildProgress, format_duration
from .shell import run_logged

STATE_EVERY_SECONDS = 5


def dry_run(options, console):
    """The plan as a shell script (returned), preflight shown on `console`; nothing is changed."""
    plan = make_plan(options)
    notes = _deps_notes(plan, options)
    checks = preflight.run_preflight(plan)
    preflight.render(checks, console)
    if failures(checks):
        console.print("[yellow]dry run: the build would stop at preflight (missing pieces above)[/]")
    return render_script(plan, notes), plan, checks


def _deps_notes(plan, options):
    if plan.checkout is None:
        return [f"--deps-mirror {options.deps_mirror} is checked after the clone"] if options.deps_mirror else []
    if options.deps_mirror is not None:
        try:
            rewrite = plan_mirror_rewrite(plan)
        except InputError as exc:
            return [f"deps mirror problem (the build would stop here): {exc}"]
        return [f"rewrite {rewrite.summary()}"] + _unmirrored_notes(rewrite)
    earlier = deps_mirror.rewritten_mirror(plan.checkout.deps_file)
    if earlier is not None:
        return [f"cmake/deps.txt points at {earlier} (an earlier --deps-mirror; --restore-deps undoes it)"]
    return []


def plan_mirror_rewrite(plan):
    """The --deps-mirror rewrite for what this build fetches (CPU, its options, unit tests or not)."""
    needed = deps_mirror.needed_names(plan.options.with_tests, plan.build_flags)
    return deps_mirror.plan_rewrite(plan.checkout.path, plan.options.deps_mirror, plan.options.trust_mirror,
                                    needed)


def _unmirrored_notes(rewrite):
    if not rewrite.unmirrored:
        return []
    return [f"not in the mirror, not fetched by this build (left at their URLs): "
            f"{', '.join(dep.name for dep in rewrite.unmirrored)}"]


@contextmanager
def build_lock(build_root, config):
    """One build per config and build root at a time (they share the build dir and venvs)."""
    build_root.mkdir(parents=True, exist_ok=True)
    path = build_root / f".lock-{config.lower()}"
    with open(path, "w") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise EnvironmentProblem(f"another `ortprof build --config {config}` is running on {build_root}")
        yield


def run_build(options, console):
    """Build, install and describe ONNX Runtime; returns the manifest dict."""
    plan = make_plan(options)
    checks = preflight.run_preflight(plan)
    preflight.render(checks, console, problems_only=not options.verbose)
    preflight.raise_if_missing(checks)
    rewrite = None
    if options.deps_mirror is not None and plan.checkout is not None:
        # all missing archives named before anything starts (after the clone for --ref)
        rewrite = plan_mirror_rewrite(plan)
    with build_lock(plan.build_root, plan.config):
        plan.log_path.parent.mkdir(parents=True, exist_ok=True)
        # line-buffered: someone tailing the log, or opening it on a failure, sees every line written so far
        with open(plan.log_path, "w", buffering=1) as log:
            runner = Runner(plan, options, console, log, rewrite)
            return runner.run()


class Runner:
    def __init__(self, plan, options, console, log, rewrite=None):
        self.plan = plan
        self.options = options
        self.console = console
        self.log = log
        self.started = time.monotonic()
        self.position = None          # [x/N] of the build when it stopped
        self.wheel = None
        self.rewrite = rewrite
        self._state_written = 0.0

    def say(self, message):
        self.console.print(message, highlight=False)
        self.log.write(f"# {message}\n")
        self.log.flush()

    def run(self):
        plan = self.plan
        self.log.write(f"# ortprof {__version__} build log, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.log.write(render_script(plan))
        write_state(plan, "running")
        try:
            if any(step.kind == "clone" for step in plan.steps):
                self._clone()
            if self.options.deps_mirror is not None and self.rewrite is None:
                self.rewrite = plan_mirror_rewrite(self.plan)
            for step in self.plan.steps:
                if step.done:
                    self.log.write(f"# already done: {step.title}\n")
                    continue
                getattr(self, "_step_" + step.kind.replace("-", "_"))(step)
            manifest = self._manifest()
        except KeyboardInterrupt:
            where = f" at step {self.position}" if self.position else ""
            write_state(self.plan, "interrupted", step=self.position)
            raise OrtprofError(f"build interrupted{where}; run the same command again to resume "
                               f"(log: {self.plan.log_path})", EXIT_INTERRUPTED)
        except OrtprofError as exc:
            status = "oom" if isinstance(exc, OomKilled) else "failed"
            write_state(self.plan, status, step=self.position, message=str(exc))
            raise
        write_state(self.plan, "done", step=self.position)
        return manifest

    def _clone(self):
        step = next(step for step in self.plan.steps if step.kind == "clone")
        self.say(f"{step.title} into {self.plan.source_dir}")
        checkouts.clone(self.options.ref, self.options.repo_url, self.plan.source_dir, self.log)
        # now build.py --help and cmake/CMakeLists.txt can be read: plan again, check again
        log_path = self.plan.log_path
        self.plan = make_plan(self.options)
        self.plan.log_path = log_path
        preflight.raise_if_missing(preflight.run_preflight(self.plan))
        write_state(self.plan, "running")

    def _run(self, step, error=EnvironmentProblem):
        self.say(step.title)
        venvs.run_or_raise(step.command, self.log, self.plan.log_path, step.title, error=error, env=step.env)

    def _step_build_venv(self, step):
        self._run(step)

    def _step_build_venv_tools(self, step):
        self._run(step)
        venvs.mark_build_venv(self.plan.build_venv, self.plan.build_requirements)

    def _step_venv(self, step):
        self._run(step)

    def _step_constraints(self, _step):
        self.plan.constraints_file.parent.mkdir(parents=True, exist_ok=True)
        self.plan.constraints_file.write_text("\n".join(self.plan.constraints) + "\n")

    def _step_build(self, step):
        plan = self.plan
        if self.rewrite is not None:
            deps_mirror.apply_rewrite(self.rewrite)
            self.say(f"rewrote {self.rewrite.summary()}")
            for note in _unmirrored_notes(self.rewrite):
                self.say(note)
        if (plan.build_dir / "CMakeCache.txt").exists():
            self.say(f"resuming the build in {plan.build_dir}: ninja redoes only unfinished steps")
        self.say(f"building ONNX Runtime {plan.ort_version} {plan.config} with {plan.jobs} jobs "
                 f"({plan.jobs_reason}); log: {plan.log_path}")
        title = f"ORT {plan.ort_version} {plan.config}"
        with BuildProgress(self.console, title, verbose=self.options.verbose, build_dir=plan.build_dir,
                           jobs=plan.jobs, kept_log=plan.step_times_path) as progress:
            def on_line(line):
                progress.line(line)
                position = progress.scanner.position()
                if position and position != self.position:
                    self.position = position
                    self._note_progress(progress.eta_text())

            result = run_logged(step.command, self.log, cwd=step.cwd, env=step.env, on_line=on_line)
        if not result.ok:
            self._raise_build_failure(progress.scanner, result.returncode)
        self._keep_step_times()
        self.wheel = self._find_wheel()
        self.say(f"compiled in {format_duration(progress.elapsed())}; wheel {self.wheel}")

    def _note_progress(self, eta):
        """Keep the state file's step and ETA current (for `ortprof builds`), at most every few seconds."""
        now = time.monotonic()
        if now - self._state_written >= STATE_EVERY_SECONDS:
            self._state_written = now
            write_state(self.plan, "running", step=self.position, eta=eta)

    def _keep_step_times(self):
        """Keep ninja's log of this complete compile: the next build of this version and config times
        its steps by it, even in a fresh build directory."""
        ninja_log = self.plan.build_dir / ".ninja_log"
        if ninja_log.is_file() and self.plan.step_times_path is not None:
            shutil.copyfile(ninja_log, self.plan.step_times_path)

    def _raise_build_failure(self, scanner, returncode):
        plan = self.plan
        if scanner.phase == "configure" and scanner.fetch_failure is not None:
            raise WorkloadError(f"ONNX Runtime {scanner.fetch_failure.describe()}; "
                                f"{self._fetch_remedy(scanner.fetch_failure)}; full log: {plan.log_path}")
        where = f"step {scanner.position()}" if scanner.position() else f"the {scanner.phase} phase"
        if scanner.oom:
            lower = max(1, plan.jobs // 2)
            raise OomKilled(f"the compiler was killed at {where}, most likely out of memory with --jobs "
                            f"{plan.jobs}: re-run with --jobs {lower} (the build resumes where it stopped); "
                            f"full log: {plan.log_path}")
        if scanner.failed_target:
            self.console.print(f"FAILED: {scanner.failed_target}", style="red", highlight=False, markup=False)
        self.console.print(scanner.error_summary(), style="red", highlight=False, markup=False)
        raise WorkloadError(f"ONNX Runtime build failed at {where} (exit {returncode}): {scanner.error_summary()}; "
                            f"full log: {plan.log_path}")

    def _fetch_remedy(self, failure):
        """What gets the failed download without network: the mirror file it needs (or --eigen-path)."""
        known = {dep.name: dep for dep in deps_mirror.checkout_downloads(self.plan.checkout.path)}
        dep = known.get(failure.name)
        files = deps_mirror.mirror_file_names(dep) if dep else f"{failure.name}.zip"
        mirror = self.options.deps_mirror or "MIRROR"
        fill = (f"`ortprof build fetch-deps --source {self.plan.checkout.path} {mirror}` fills it on a "
                f"machine with network")
        remedy = (f"offline, put {files} into {mirror} ({fill})" if self.options.deps_mirror else
                  f"offline, build with --deps-mirror {mirror} holding {files} ({fill})")
        if failure.name == "eigen":
            remedy += ", or give --eigen-path DIR (an Eigen source tree)"
        return remedy

    def _find_wheel(self):
        dist = self.plan.build_dir / "dist"
        wheels = sorted(dist.glob(f"onnxruntime*-{self.plan.ort_version}-*.whl"), key=lambda p: p.stat().st_mtime)
        if not wheels:
            raise WorkloadError(f"the build finished but left no onnxruntime {self.plan.ort_version} wheel in "
                                f"{dist}; full log: {self.plan.log_path}")
        return wheels[-1]

    def _step_install(self, step):
        wheel = self.wheel or self._find_wheel()
        expected = str(self.plan.expected_wheel)
        command = [str(wheel) if str(arg) == expected else arg for arg in step.command]
        self.say(f"{step.title} into {self.plan.install_venv or 'the current environment'}")
        venvs.run_or_raise(command, self.log, self.plan.log_path, "installing the wheel", error=WorkloadError)
        self.wheel = wheel

    def _manifest(self):
        plan = self.plan
        info = venvs.inspect_install(plan.install_python)
        if info.get("version") is None:
            raise WorkloadError(f"{plan.install_python} does not find onnxruntime after the install; full log: "
                                f"{plan.log_path}")
        module = find_native_module(info["package_dir"])
        build_id, symbol_status = native_module_facts(module)
        build_step = next(step for step in plan.steps if step.kind == "build")
        manifest = {
            "schema": SCHEMA,
            "config": plan.config,
            "ort_version": info["version"],
            "ort_commit": plan.checkout.commit,
            "source": str(plan.checkout.path),
            "build_dir": str(plan.build_dir),
            "command": build_step.shell(),
            "flags": plan.build_flags,
            "jobs": plan.jobs,
            "frame_pointers": plan.options.frame_pointers,
            "unit_tests": plan.options.with_tests,
            "deps_mirror": str(self.rewrite.mirror) if self.rewrite else None,
            "wheel": str(self.wheel),
            "installed_into": "venv" if plan.install_venv else "current-environment",
            "venv": str(plan.install_venv) if plan.install_venv else None,
            "python": info["python"],
            "python_executable": str(plan.install_python),
            "site_packages": str(Path(info["package_dir"]).parent),
            "native_module": str(module) if module else None,
            "build_id": build_id,
            "symbol_status": symbol_status,
            "log": str(plan.log_path),
            "elapsed_seconds": round(time.monotonic() - self.started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ortprof_version": __version__,
        }
        write_json(plan.manifest_path, manifest)
        manifest["manifest"] = str(plan.manifest_path)
        self.say(f"done in {format_duration(time.monotonic() - self.started)}: ONNX Runtime {info['version']} "
                 f"{plan.config} ({symbol_status or 'no ELF native module'}) in {manifest['site_packages']}; "
                 f"manifest {plan.manifest_path}")
        self.say(f"profile with it: ortprof record --ort-build {plan.config} -- python your_app.py")
        return manifest


class OomKilled(WorkloadError):
    """The compiler was OOM-killed: same exit code as any failed build, its own state."""


def restore_deps(options, console):
    """--restore-deps: put the checkout's shipped cmake/deps.txt back."""
    checkout, _source, needs_clone = resolve_source(options, Path(options.build_root).resolve())
    if needs_clone:
        raise InputError(f"no clone of {options.ref} in {options.build_root}; nothing to restore")
    restored = deps_mirror.restore(checkout.path)
    for path in restored:
        console.print(f"restored {path} from {deps_mirror.backup_path(path).name}")
    if not restored:
        console.print(f"{checkout.path / 'cmake'}: no file rewritten by ortprof; nothing to restore")
    return bool(restored)


def fetch_deps(source, mirror, console, everything=False, with_tests=False, build_flags=()):
    """`ortprof build fetch-deps`: download the checkout's archives into `mirror`.

    By default only what a CPU build with these options fetches; `everything`:
    all of deps.txt and the cmake files' URLs.
    """
    checkout = checkouts.inspect_checkout(source)
    needed = None if everything else deps_mirror.needed_names(with_tests, build_flags)

    def report(result):
        size = _size(result.size) if result.size else ""
        style = {"fetched": "green", "present": "dim", "mismatch": "red", "failed": "red"}[result.status]
        console.print(f"[{style}]{result.status:8}[/] {result.dep.name} {size} {result.detail}".rstrip(),
                      highlight=False)

    results = deps_mirror.fetch_deps(checkout.path, mirror, needed=needed, on_result=report)
    total = sum(result.size for result in results)
    which = "" if everything else " (those a CPU build fetches; --all for every platform and option)"
    console.print(f"{len(results)} dependencies of ONNX Runtime {checkout.version}{which} in "
                  f"{Path(mirror).resolve()} ({_size(total)}); build offline with --deps-mirror "
                  f"{Path(mirror).resolve()}")
    return results


def _size(count):
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"
