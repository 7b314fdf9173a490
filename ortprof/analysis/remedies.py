"""Remedies in the client's language.

A finding's remedy is described once, language-neutrally: the session options to set
(session config entries by key, intra-/inter-op thread counts, execution mode), notes,
and "option A/B/C" alternatives shown commented out. `render` writes it as code the
user can paste into the program that was profiled: Python for a Python process, the C
API and the C++ wrapper for a native one (C, C++, Rust ...), C#, Java or Node where the
process is one of those. Config entries always name their session config key.

`detect_client` tells which from what the process had loaded (its /proc/PID/maps when
profiling began and its executable); None when it cannot tell, rendered as Python.
"""
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

PYTHON, NATIVE, CSHARP, JAVA, NODE = "python", "native", "csharp", "java", "node"
CLIENTS = (PYTHON, NATIVE, CSHARP, JAVA, NODE)

# -- which client ----------------------------------------------------------------------------

# The binding that loaded ORT names the client (strongest evidence) ...
_BINDINGS: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    (PYTHON, re.compile(r"(?:^|/)onnxruntime_pybind11_state[^/]*\.so$")),
    (NODE, re.compile(r"(?:^|/)onnxruntime_binding\.node$")),
    (JAVA, re.compile(r"(?:^|/)libonnxruntime4j_jni\.so$")),
    (CSHARP, re.compile(r"(?:^|/)Microsoft\.ML\.OnnxRuntime[^/]*\.dll$", re.IGNORECASE)),
)
# ... then the runtime the process runs on (a binding loaded from memory or renamed).
_RUNTIMES: Tuple[Tuple[str, "re.Pattern[str]"], ...] = (
    (NODE, re.compile(r"(?:^|/)(?:node|nodejs)$")),
    (CSHARP, re.compile(r"(?:^|/)(?:libcoreclr\.so|libmonosgen-2\.0\.so[.\d]*|dotnet)$")),
    (JAVA, re.compile(r"(?:^|/)(?:libjvm\.so|java)$")),
)
# Any other process with ORT's shared library calls its C API (C, C++, Rust, Go ...).
_ORT_LIBRARY = re.compile(r"(?:^|/)libonnxruntime\.so[.\d]*$")
_DELETED = " (deleted)"


def mapped_paths(maps_text: Optional[str]) -> List[str]:
    """The files of a /proc/PID/maps text, in order, each once."""
    paths: Dict[str, None] = {}
    for line in (maps_text or "").splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            path = parts[5].strip()
            paths[path[:-len(_DELETED)] if path.endswith(_DELETED) else path] = None
    return list(paths)


def detect_client(maps_text: Optional[str], exe: Optional[str] = None,
                  ort_module: Optional[str] = None) -> Optional[str]:
    """python | node | java | csharp | native, from a process's mappings and executable
    (and the ORT module run.json names, for runs without maps.txt); None: unknown."""
    paths = mapped_paths(maps_text) + [path for path in (exe, ort_module) if path]
    for rules in (_BINDINGS, _RUNTIMES):
        for client, pattern in rules:
            if any(pattern.search(path) for path in paths):
                return client
    return NATIVE if any(_ORT_LIBRARY.search(path) for path in paths) else None


# -- what to set, language-neutral -------------------------------------------------------------

CONFIG, EXECUTION_MODE = "config", "execution_mode"
INTRA_THREADS, INTER_THREADS = "intra_op_num_threads", "inter_op_num_threads"
# One intra-op pool shared by the process's sessions: created once with the environment, and every
# session then opts out of its own pools.
GLOBAL_POOL, PER_SESSION_OFF = "global_intra_op_num_threads", "use_per_session_threads"


@dataclass(frozen=True)
class Setting:
    """One session option. `value`: the config value, a thread count (or a placeholder such as
    "<usable cores>"), or sequential | parallel. A setting that is not `active` is an alternative,
    shown commented out, after `lead` words when given ("or fewer threads: ...")."""
    option: str
    value: str
    key: Optional[str] = None        # the session config key (CONFIG)
    comment: Optional[str] = None    # at the end of the line, e.g. "option A"
    active: bool = True
    lead: Optional[str] = None
    gap: int = 3                     # spaces before the comment
    align: bool = False              # the comment in the column of the comment on the line above


@dataclass(frozen=True)
class Note:
    """A comment line of its own."""
    text: str


Line = Union[Setting, Note]


def config_entry(key: str, value: str, **layout) -> Setting:
    return Setting(CONFIG, value, key=key, **layout)


def intra_op_threads(count, **layout) -> Setting:
    return Setting(INTRA_THREADS, str(count), **layout)


def inter_op_threads(count, **layout) -> Setting:
    return Setting(INTER_THREADS, str(count), **layout)


def execution_mode(mode: str, **layout) -> Setting:
    return Setting(EXECUTION_MODE, mode, **layout)


def global_pool(count, **layout) -> Setting:
    return Setting(GLOBAL_POOL, str(count), **layout)


def per_session_threads_off(**layout) -> Setting:
    return Setting(PER_SESSION_OFF, "false", **layout)


@dataclass
class Remedy:
    lines: List[Line] = field(default_factory=list)
    model: Optional[str] = None      # the session's model file name, when known


# -- languages ---------------------------------------------------------------------------------

def _double_quoted(text: str) -> str:
    return json.dumps(text)


def _single_quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Language:
    """How one binding writes session options: `statements` per option (str.format with key,
    value, MODE/mode), the lines before them and the session's creation (with {model})."""
    title: str
    comment: str
    head: Tuple[str, ...]
    statements: Dict[str, str]
    session: Tuple[str, ...]
    quote: Callable[[str], str] = _double_quoted

    def statement(self, setting: Setting) -> str:
        quote = self.quote
        if setting.option not in self.statements:     # e.g. global thread pools: not in every binding
            return (f"{self.comment} {setting.option} = {setting.value}: set through {self.title}'s own API "
                    "(ortprof has no form of it for this binding)")
        return self.statements[setting.option].format(
            key=quote(setting.key or ""), value=quote(setting.value) if setting.option == CONFIG else setting.value,
            MODE=setting.value.upper(), mode=quote(setting.value))


PYTHON_LANGUAGE = Language(
    "Python", "#", ("import onnxruntime as ort", "opts = ort.SessionOptions()"),
    {CONFIG: "opts.add_session_config_entry({key}, {value})", INTRA_THREADS: "opts.intra_op_num_threads = {value}",
     INTER_THREADS: "opts.inter_op_num_threads = {value}",
     EXECUTION_MODE: "opts.execution_mode = ort.ExecutionMode.ORT_{MODE}",
     GLOBAL_POOL: "ort.capi._pybind_state.set_global_thread_pool_sizes({value}, 1)",
     PER_SESSION_OFF: "opts.use_per_session_threads = False"},
    ('session = ort.InferenceSession("model.onnx", opts, providers=["CPUExecutionProvider"])',))
C_LANGUAGE = Language(
    "C API (onnxruntime_c_api.h; each call returns an OrtStatus*, NULL on success)", "//",
    ("const OrtApi* api = OrtGetApiBase()->GetApi(ORT_API_VERSION);", "OrtSessionOptions* opts;",
     "api->CreateSessionOptions(&opts);"),
    {CONFIG: "api->AddSessionConfigEntry(opts, {key}, {value});",
     INTRA_THREADS: "api->SetIntraOpNumThreads(opts, {value});", INTER_THREADS: "api->SetInterOpNumThreads(opts, {value});",
     EXECUTION_MODE: "api->SetSessionExecutionMode(opts, ORT_{MODE});",
     GLOBAL_POOL: ("OrtThreadingOptions* tp; api->CreateThreadingOptions(&tp); api->SetGlobalIntraOpNumThreads(tp, "
                   "{value}); api->CreateEnvWithGlobalThreadPools(ORT_LOGGING_LEVEL_WARNING, \"app\", tp, &env);"),
     PER_SESSION_OFF: "api->DisablePerSessionThreads(opts);"},
    ("OrtSession* session;", "api->CreateSession(env, {model}, opts, &session);"))
CPP_LANGUAGE = Language(
    "or the C++ API (onnxruntime_cxx_api.h)", "//", ("Ort::SessionOptions opts;",),
    {CONFIG: "opts.AddConfigEntry({key}, {value});", INTRA_THREADS: "opts.SetIntraOpNumThreads({value});",
     INTER_THREADS: "opts.SetInterOpNumThreads({value});",
     EXECUTION_MODE: "opts.SetExecutionMode(ExecutionMode::ORT_{MODE});",
     GLOBAL_POOL: ("Ort::ThreadingOptions tp; tp.SetGlobalIntraOpNumThreads({value}); "
                   "Ort::Env env(tp, ORT_LOGGING_LEVEL_WARNING, \"app\");"),
     PER_SESSION_OFF: "opts.DisablePerSessionThreads();"},
    ("Ort::Session session(env, {model}, opts);",))
CSHARP_LANGUAGE = Language(
    "C#", "//", ("using Microsoft.ML.OnnxRuntime;", "var opts = new SessionOptions();"),
    {CONFIG: "opts.AddSessionConfigEntry({key}, {value});", INTRA_THREADS: "opts.IntraOpNumThreads = {value};",
     INTER_THREADS: "opts.InterOpNumThreads = {value};",
     EXECUTION_MODE: "opts.ExecutionMode = ExecutionMode.ORT_{MODE};"},
    ("using var session = new InferenceSession({model}, opts);",))
JAVA_LANGUAGE = Language(
    "Java", "//", ("import ai.onnxruntime.*;", "OrtEnvironment env = OrtEnvironment.getEnvironment();",
                   "OrtSession.SessionOptions opts = new OrtSession.SessionOptions();"),
    {CONFIG: "opts.addConfigEntry({key}, {value});", INTRA_THREADS: "opts.setIntraOpNumThreads({value});",
     INTER_THREADS: "opts.setInterOpNumThreads({value});",
     EXECUTION_MODE: "opts.setExecutionMode(OrtSession.SessionOptions.ExecutionMode.{MODE});"},
    ("OrtSession session = env.createSession({model}, opts);",))
# onnxruntime-node hands each string of `extra` to AddConfigEntry under its key path
# (nested objects joined with "."), so the flat session config key is the entry itself.
NODE_LANGUAGE = Language(
    "Node (onnxruntime-node)", "//",
    ("const ort = require('onnxruntime-node');", "const options = { extra: {} };   // extra: session config entries"),
    {CONFIG: "options.extra[{key}] = {value};", INTRA_THREADS: "options.intraOpNumThreads = {value};",
     INTER_THREADS: "options.interOpNumThreads = {value};", EXECUTION_MODE: "options.executionMode = {mode};"},
    ("const session = await ort.InferenceSession.create({model}, options);",), _single_quoted)

LANGUAGES: Dict[Optional[str], Tuple[Language, ...]] = {
    PYTHON: (PYTHON_LANGUAGE,), NATIVE: (C_LANGUAGE, CPP_LANGUAGE), CSHARP: (CSHARP_LANGUAGE,),
    JAVA: (JAVA_LANGUAGE,), NODE: (NODE_LANGUAGE,)}
DEFAULT_MODEL = "model.onnx"


def render(remedy: Remedy, client: Optional[str]) -> str:
    """The remedy as code for `client` (CLIENTS; None or another: Python). Several forms
    (native: C API and C++) follow each other, each under a comment naming it."""
    languages = LANGUAGES.get(client, LANGUAGES[PYTHON])
    if len(languages) == 1:
        return "\n".join(_lines(remedy, languages[0]))
    return "\n".join(line for language in languages
                     for line in (f"{language.comment} {language.title}", *_lines(remedy, language)))


def _lines(remedy: Remedy, language: Language) -> Iterable[str]:
    yield from language.head
    column: Optional[int] = None      # where the comment on the line above starts
    for item in remedy.lines:
        text, column = _line(item, language, column)
        yield text
    model = language.quote(remedy.model or DEFAULT_MODEL)
    yield from (line.format(model=model) for line in language.session)


def _line(item: Line, language: Language, column: Optional[int]) -> Tuple[str, Optional[int]]:
    marker = language.comment
    if isinstance(item, Note):
        return f"{marker} {item.text}", None
    text = language.statement(item)
    if not item.active:
        text = f"{marker} {item.lead}: {text}" if item.lead else f"{marker} {text}"
    if item.comment is None:
        return text, None
    gap = max(column - len(text), item.gap) if item.align and column is not None else item.gap
    return f"{text}{' ' * gap}{marker} {item.comment}", len(text) + gap
