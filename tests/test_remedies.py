"""Remedies in the client's language: the client recognised from what the process had mapped,
each language's paste-able form of the same settings (with the session config key), Python's
text exactly as before, and "unknown" where the session's options were set before ortprof looked."""
import pytest

from conftest import FIXTURES
from ortprof.analysis.diagnose import UNKNOWN_REASON, diagnose
from ortprof.analysis.loading import ort_context
from ortprof.analysis.remedies import (CLIENTS, Note, Remedy, config_entry, detect_client, execution_mode,
                                       inter_op_threads, intra_op_threads, mapped_paths, render)
from ortprof.analysis.report import report_from_perf_script
from ortprof.model.manifest import RunManifest
from ortprof.model.report import OrtContext, Report
from ortprof.recording.rundir import RunDirectory
from ortprof.signals.runs import SessionSummary

# -- /proc/PID/maps of each kind of client (shortened from real processes) ---------------------------

NODE_MAPS = """\
5581c8a00000-5581c8e4c000 r--p 00000000 fd:01 1835042                    /usr/bin/node
5581c8e4c000-5581cb0d1000 r-xp 0044c000 fd:01 1835042                    /usr/bin/node
7f3b58000000-7f3b58021000 rw-p 00000000 00:00 0
7f3b5a400000-7f3b5b9f1000 r-xp 00000000 fd:01 2359411                    /srv/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1
7f3b5c000000-7f3b5c0a2000 r-xp 00000000 fd:01 2359410                    /srv/app/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node
7f3b5d228000-7f3b5d3bd000 r-xp 00028000 fd:01 1573030                    /usr/lib/x86_64-linux-gnu/libc.so.6
7ffc4d0a1000-7ffc4d0c2000 rw-p 00000000 00:00 0                          [stack]
"""
DOTNET_MAPS = """\
55e0c7b1f000-55e0c7b27000 r-xp 00000000 fd:01 2490387                    /usr/share/dotnet/dotnet
7f91d4a00000-7f91d4e3e000 r-xp 00000000 fd:01 2490544                    /usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.8/libcoreclr.so
7f91d2000000-7f91d35f1000 r-xp 00000000 fd:01 3014711                    /srv/app/bin/runtimes/linux-x64/native/libonnxruntime.so
7f91d5d28000-7f91d5ebd000 r-xp 00028000 fd:01 1573030                    /usr/lib/x86_64-linux-gnu/libc.so.6
"""
JAVA_MAPS = """\
5603d3e00000-5603d3e01000 r-xp 00000000 fd:01 2752553                    /usr/lib/jvm/java-17-openjdk-amd64/bin/java
7fa6e1000000-7fa6e2054000 r-xp 00000000 fd:01 2752610                    /usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so
7fa6c4000000-7fa6c55f1000 r-xp 00000000 00:2b 41                         /tmp/onnxruntime-java4411872917052236787/libonnxruntime.so
7fa6c6a00000-7fa6c6a2e000 r-xp 00000000 00:2b 42                         /tmp/onnxruntime-java4411872917052236787/libonnxruntime4j_jni.so
"""
CPP_MAPS = """\
55b2a8c00000-55b2a8c19000 r-xp 00000000 fd:01 3145801                    /opt/classifier/bin/classifier
7f0a90000000-7f0a915f1000 r-xp 00000000 fd:01 3145790                    /opt/onnxruntime-linux-x64-1.31.1/lib/libonnxruntime.so.1.31.1
7f0a92a00000-7f0a92b9a000 r-xp 00000000 fd:01 1573044                    /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30
"""
PYTHON_MAPS = """\
5612a1e00000-5612a2085000 r-xp 00000000 fd:01 1835310                    /usr/bin/python3.11
7f5c70000000-7f5c71d7a000 r-xp 00000000 fd:01 2621733                    /srv/venv/lib/python3.11/site-packages/onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so (deleted)
7f5c72a00000-7f5c72b9a000 r-xp 00000000 fd:01 1573044                    /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30
"""


@pytest.mark.parametrize("maps,exe,client", [
    (NODE_MAPS, "/usr/bin/node", "node"),
    (DOTNET_MAPS, "/usr/share/dotnet/dotnet", "csharp"),
    (DOTNET_MAPS.replace("/usr/share/dotnet/dotnet", "/srv/app/bin/Classifier"), "/srv/app/bin/Classifier", "csharp"),
    (JAVA_MAPS, "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "java"),
    (CPP_MAPS, "/opt/classifier/bin/classifier", "native"),
    (PYTHON_MAPS, "/usr/bin/python3.11", "python"),
])
def test_the_client_is_what_the_process_loaded(maps, exe, client):
    assert detect_client(maps, exe) == client
    assert detect_client(maps, None) == client      # the mappings alone tell


def test_the_binding_wins_over_the_runtime_and_the_library():
    # a JVM that embeds Python: ORT came through the Python binding
    assert detect_client(JAVA_MAPS.replace("libonnxruntime4j_jni.so", "x.so") + PYTHON_MAPS, None) == "python"
    assert detect_client(CPP_MAPS + "7f0a-7f0b r-xp 0 fd:01 9 /usr/lib/libjvm.so\n", None) == "java"


def test_without_maps_the_executable_or_the_ort_module_tells():
    assert detect_client(None, "/usr/local/bin/node") == "node"
    assert detect_client("", None, "/srv/venv/lib/python3.11/site-packages/onnxruntime/capi/"
                                   "onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so") == "python"
    assert detect_client(None, "/opt/app/server", "/opt/ort/lib/libonnxruntime.so.1.31.1") == "native"


def test_unknown_when_nothing_names_a_client():
    assert detect_client(None, None) is None
    assert detect_client("7f0a-7f0b r-xp 0 fd:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6\n", "/usr/bin/python3") is None
    assert detect_client("not a maps line\n\n", "") is None


def test_mapped_paths_are_files_once_without_deleted():
    paths = mapped_paths(PYTHON_MAPS + NODE_MAPS)
    assert paths.count("/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30") == 1
    assert all(path.startswith("/") and not path.endswith("(deleted)") for path in paths)
    assert "[stack]" not in paths


def test_ort_context_reads_maps_txt_and_the_executable(tmp_path):
    (tmp_path / "maps.txt").write_text(NODE_MAPS)
    manifest = RunManifest(environment={"process": {"pid": 7, "exe": "/usr/bin/node"},
                                        "ort": {"path": str(tmp_path / "gone" / "libonnxruntime.so.1"),
                                                "source": "loaded"}})
    assert ort_context(manifest, [], RunDirectory(tmp_path)).client == "node"
    # no maps.txt: the ORT module run.json names; one merely installed for ortprof's Python says nothing
    bare = tmp_path / "bare"
    bare.mkdir()
    manifest.environment["process"]["exe"] = "/opt/app/server"
    assert ort_context(manifest, [], RunDirectory(bare)).client == "native"
    manifest.environment["ort"]["source"] = "installed"
    assert ort_context(manifest, [], RunDirectory(bare)).client is None
    assert ort_context(manifest, []).client is None


# -- each language's form of the same remedy -----------------------------------------------------------

SPIN_REMEDY = Remedy([Note("now: allow_spinning=1 (default)"),
                      config_entry("session.intra_op.allow_spinning", "0", comment="option A"),
                      intra_op_threads(1, active=False, comment="option B", align=True),
                      execution_mode("sequential", active=False, comment="option C")], model="bert.onnx")

EXPECTED_CALLS = {
    "python": ['opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # option A',
               "# opts.intra_op_num_threads = 1",
               "# opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL   # option C",
               'session = ort.InferenceSession("model.onnx", opts, providers=["CPUExecutionProvider"])'],
    "native": ["const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);",
               'api->AddSessionConfigEntry(opts, "session.intra_op.allow_spinning", "0");   // option A',
               "// api->SetIntraOpNumThreads(opts, 1);",
               "// api->SetSessionExecutionMode(opts, ORT_SEQUENTIAL);",
               'api->CreateSession(env, "bert.onnx", opts, &session);',
               "Ort::SessionOptions opts;",
               'opts.AddConfigEntry("session.intra_op.allow_spinning", "0");   // option A',
               "// opts.SetIntraOpNumThreads(1);",
               "// opts.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);",
               'Ort::Session session(env, "bert.onnx", opts);'],
    "csharp": ["var opts = new SessionOptions();",
               'opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");   // option A',
               "// opts.IntraOpNumThreads = 1;",
               "// opts.ExecutionMode = ExecutionMode.ORT_SEQUENTIAL;",
               'using var session = new InferenceSession("bert.onnx", opts);'],
    "java": ["OrtSession.SessionOptions opts = new OrtSession.SessionOptions();",
             'opts.addConfigEntry("session.intra_op.allow_spinning", "0");   // option A',
             "// opts.setIntraOpNumThreads(1);",
             "// opts.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.SEQUENTIAL);",
             'OrtSession session = env.createSession("bert.onnx", opts);'],
    "node": ["const ort = require('onnxruntime-node');",
             "options.extra['session.intra_op.allow_spinning'] = '0';   // option A",
             "// options.intraOpNumThreads = 1;",
             "// options.executionMode = 'sequential';",
             "const session = await ort.InferenceSession.create('bert.onnx', options);"],
}


@pytest.mark.parametrize("client", CLIENTS)
def test_each_language_sets_the_config_key_through_its_own_api(client):
    text = render(SPIN_REMEDY, client)
    for expected in EXPECTED_CALLS[client]:
        assert any(line.startswith(expected) for line in text.splitlines()), (expected, text)
    assert "session.intra_op.allow_spinning" in text
    assert text.count("now: allow_spinning=1 (default)") == (2 if client == "native" else 1)


@pytest.mark.parametrize("client,call", [
    ("python", "opts.inter_op_num_threads = 2"), ("native", "api->SetInterOpNumThreads(opts, 2);"),
    ("native", "opts.SetInterOpNumThreads(2);"), ("csharp", "opts.InterOpNumThreads = 2;"),
    ("java", "opts.setInterOpNumThreads(2);"), ("node", "options.interOpNumThreads = 2;")])
def test_inter_op_threads_in_each_language(client, call):
    assert call in render(Remedy([inter_op_threads(2)]), client).splitlines()


def test_native_shows_the_c_api_then_the_cpp_wrapper():
    lines = render(SPIN_REMEDY, "native").splitlines()
    assert lines[0].startswith("// C API") and lines.index("Ort::SessionOptions opts;") > 0
    assert lines[lines.index("Ort::SessionOptions opts;") - 1].startswith("// or the C++ API")


def test_aligned_comments_line_up_in_every_language():
    for client in CLIENTS:
        lines = render(SPIN_REMEDY, client).splitlines()
        a = next(line for line in lines if line.endswith("option A"))
        b = next(line for line in lines if line.endswith("option B"))
        assert a.rindex("option A") == b.rindex("option B"), client


def test_an_unknown_client_gets_the_python_form():
    assert render(SPIN_REMEDY, None) == render(SPIN_REMEDY, "python") == render(SPIN_REMEDY, "cobol")


def test_node_strings_are_quoted_for_javascript():
    text = render(Remedy([config_entry("session.x", "it's")], model="a'b.onnx"), "node")
    assert "options.extra['session.x'] = 'it\\'s';" in text and "create('a\\'b.onnx', options)" in text


# -- the findings -----------------------------------------------------------------------------------

# What diagnose wrote for this fixture before remedies had languages (ORT version unknown, and 1.31.1).
PYTHON_SPIN_REMEDY = (
    'import onnxruntime as ort\n'
    'opts = ort.SessionOptions()\n'
    '# now: allow_spinning=1 (default), intra_op_num_threads=0 (default: one per physical core)\n'
    'opts.add_session_config_entry("session.intra_op.allow_spinning", "0")   # option A\n'
    '# opts.intra_op_num_threads = 1                                         # option B\n'
    '# opts.add_session_config_entry("session.force_spinning_stop", "1")  # option D: stop spinning when run() returns\n'
    'session = ort.InferenceSession("model.onnx", opts, providers=["CPUExecutionProvider"])')
PYTHON_SPIN_REMEDY_1_31 = PYTHON_SPIN_REMEDY.replace(
    '# opts.add_session_config_entry("session.force_spinning_stop"',
    '# opts.add_session_config_entry("session.intra_op.spin_duration_us", "200")  # option C: spin briefly\n'
    '# opts.add_session_config_entry("session.force_spinning_stop"')


@pytest.fixture(scope="module")
def spinning_document():
    return report_from_perf_script(FIXTURES / "ort-1.15.1-debug-default.perf-script.txt.xz")


def _finding(document, finding_id, sessions=(), **ort):
    report = Report.from_json(document)
    report.ort = OrtContext(**ort)
    report.sessions = list(sessions)
    return next(f for f in diagnose(report) if f.id == finding_id)


def _session(options_known=True, options=None, model="/models/bert.onnx", **figures):
    values = dict(session=1, pid=7, model=model, providers=None, ort_version="1.31.1", options=options or {},
                  runs=100, rate_per_s=2.0, mean_ms=1.0, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, max_ms=4.0,
                  variance_p99_p50=3.0, caller_tids=[10], source="capi", handle="0x5581d2c0",
                  options_known=options_known)
    values.update(figures)
    return SessionSummary(**values)


@pytest.mark.parametrize("client", [None, "python"])
def test_python_remedy_text_is_unchanged(spinning_document, client):
    assert _finding(spinning_document, "spin-wait", client=client).remedy == PYTHON_SPIN_REMEDY
    assert _finding(spinning_document, "spin-wait", client=client, ort_version="1.31.1").remedy == PYTHON_SPIN_REMEDY_1_31


@pytest.mark.parametrize("client,call", [
    ("native", 'api->AddSessionConfigEntry(opts, "session.intra_op.allow_spinning", "0");'),
    ("native", "// opts.SetIntraOpNumThreads(1);"),
    ("csharp", 'opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");'),
    ("java", 'opts.addConfigEntry("session.intra_op.allow_spinning", "0");'),
    ("node", "options.extra['session.intra_op.spin_duration_us'] = '200';"),
])
def test_spin_wait_remedy_in_the_clients_language(spinning_document, client, call):
    remedy = _finding(spinning_document, "spin-wait", [_session()], client=client, ort_version="1.31.1").remedy
    assert call in remedy and "import onnxruntime" not in remedy
    assert '"bert.onnx"' in remedy or "'bert.onnx'" in remedy      # the session's model, not model.onnx


def test_options_set_before_ortprof_attached_are_unknown_not_default(spinning_document):
    unknown = _finding(spinning_document, "spin-wait", [_session(options_known=False)], client="native")
    assert f"// now: allow_spinning=unknown, intra_op_num_threads=unknown ({UNKNOWN_REASON})" in unknown.remedy
    assert unknown.evidence["allow_spinning"] == f"unknown ({UNKNOWN_REASON})"
    assert "default" not in unknown.remedy
    known = _finding(spinning_document, "spin-wait", [_session(options_known=True)], client="native")
    assert "// now: allow_spinning=1 (default), intra_op_num_threads=0 (default" in known.remedy
    # an option the C API did set before ortprof looked is still shown as set
    seen = _finding(spinning_document, "spin-wait", [_session(options={"intra_op_num_threads": 2})], client="native")
    assert "intra_op_num_threads=2" in seen.remedy


def test_latency_variance_says_unknown_for_that_session(spinning_document):
    # dynamic_block_base is its remedy where the scheduler saw stragglers
    from ortprof.signals.sched.section import Cause, LatencyBreakdown, RunGroup
    states = dict(on_cpu=1.0, runnable=0.0, throttled=0.0, blocked=0.0, other=0.0)
    stragglers = LatencyBreakdown(RunGroup(40, 1.0, states, straggler_ms=0.1), RunGroup(5, 3.0, states, straggler_ms=2.0),
                                  cause=Cause("straggler", 2.0, 1.9, "slow runs: the last worker finished late"))
    found = _finding(spinning_document, "latency-variance", [_session(options_known=False, latency_breakdown=stragglers)],
                     client="java")
    assert f"// now: dynamic_block_base=unknown ({UNKNOWN_REASON})" in found.remedy
    assert 'opts.addConfigEntry("session.dynamic_block_base", "4");' in found.remedy
