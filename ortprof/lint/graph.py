"""Small read-only views of an ONNX graph: node counts, op histograms, edges."""
from collections import Counter, defaultdict

# Domains whose ops are ONNX's own; every other domain is shown as "domain:Op".
DEFAULT_DOMAINS = ("", "ai.onnx")


# Ops ORT's constant folding leaves alone on purpose: QDQ pairs stay for the quantized
# kernels, random ops must stay random.
NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear", "Constant", "RandomNormal", "RandomUniform",
              "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def op_key(node):
    if node.domain in DEFAULT_DOMAINS:
        return node.op_type
    return f"{node.domain}:{node.op_type}"


def iter_graphs(graph):
    """The graph and every subgraph held by If/Loop/Scan attributes, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_graphs(attr.g)
            for sub in attr.graphs:
                yield from iter_graphs(sub)


def iter_nodes(graph):
    for g in iter_graphs(graph):
        yield from g.node


def node_count(graph):
    return sum(1 for _ in iter_nodes(graph))


def op_histogram(graph):
    """{op: count} over the graph and its subgraphs, most frequent first."""
    counts = Counter(op_key(node) for node in iter_nodes(graph))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def is_default_domain(node):
    return node.domain in DEFAULT_DOMAINS


class GraphIndex:
    """Producer/consumer lookups for the top-level graph (patterns do not cross subgraphs)."""

    def __init__(self, graph):
        self.graph = graph
        self.nodes = list(graph.node)
        self.initializers = {t.name for t in graph.initializer}
        self.producer = {}
        self.consumers = defaultdict(list)
        for node in self.nodes:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.graph_outputs = {o.name for o in graph.output}
        # Constant nodes are weights too (ORT turns them into initializers at load), and so is
        # anything computed from constants only: constant folding replaces it by its value.
        # ONNX graphs are topologically sorted, so one pass propagates.
        self.constants = set(self.initializers)
        self.foldable = []
        for node in self.nodes:
            if not is_default_domain(node):
                continue
            if node.op_type == "Constant":
                self.constants.update(o for o in node.output if o)
            elif node.op_type not in NOT_FOLDED and any(node.input) \
                    and all(self.is_constant(name) for name in node.input if name):
                self.foldable.append(node)
                self.constants.update(o for o in node.output if o)

    def is_constant(self, name):
        return name in self.constants

    def next_nodes(self, node):
        """Nodes consuming any output of `node`."""
        found = []
        for name in node.output:
            found.extend(self.consumers.get(name, ()))
        return found

    def sole_consumer(self, node):
        """The only node reading `node`'s single output, or None."""
        if len(node.output) != 1 or node.output[0] in self.graph_outputs:
            return None
        readers = self.consumers.get(node.output[0], [])
        return readers[0] if len(readers) == 1 else None
