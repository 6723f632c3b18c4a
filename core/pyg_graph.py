"""EIGNN and ECGNN as torch_geometric graphs, and their two convolutions as MessagePassing layers.

    graphs = pyg_graph.pyg_graphs(batch, cfg)    # a dataloader.Batch and the run's flags
    graphs['EIG'], graphs['ECG']                   # torch_geometric Batch objects, one graph per dialogue
    graphs['ECG'].get_example(0)                   # one dialogue's ECGNN graph, a Data
    pyg_graph.to_hetero(graphs['ECG'].get_example(0))   # the same as a HeteroData

The edges are graph.py's (graph.ecgnn_graph / graph.eignn_graph: the window rules exist once), the
original's multiset exactly: a duplicated edge is repeated in edge_index (it counts twice in the degrees).

Nodes. A dialogue of n utterances in a graph with the blocks graph.graph_blocks(cfg, stage) (its
modalities in l, a, v order, then u where the graph has the multimodal node) has nb*n nodes, block
after block: node k*n + t is utterance t's node of block k. A Batch holds its dialogues one after the
other (Batch.ptr: each dialogue's first node; Batch.batch: each node's dialogue). Per node:
  node_type (num_nodes,)  index into NODE_TYPES: text, audio, visual, multimodal
  utt       (num_nodes,)  the utterance (turn) index inside its dialogue
Per edge, sorted by destination node, then source node:
  edge_index (2, E)       [source node; destination node], duplicates repeated
  edge_type  (E,)         index into EDGE_TYPES: (source type, relation, destination type) with relation
                          'to_later' (an earlier turn sends to a later one, same block), 'to_earlier'
                          (a later turn to an earlier one, same block) or 'same_turn' (another block of
                          the same utterance)

--graph-backend pyg runs the graphs with GatedConv (ECGNN, graph.GatedConv's twin) and NormConv (EIGNN,
graph.NormConv's twin) over these objects: the same formulas, the same parameter names (a `gate`
Linear(2h, 1)), so a checkpoint moves between the backends.
"""
from types import SimpleNamespace

import torch
import torch.nn as nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree

import graph

NODE_TYPES = ('text', 'audio', 'visual', 'multimodal')
BLOCK_TYPE = {'l': 0, 'a': 1, 'v': 2, 'u': 3}            # a block letter -> its index in NODE_TYPES
RELATIONS = ('to_later', 'to_earlier', 'same_turn')
EDGE_TYPES = tuple((s, r, d) for s in NODE_TYPES for r in RELATIONS for d in NODE_TYPES)


def edge_type_index(src_type, relation, dst_type):
    """Index into EDGE_TYPES of (source node type, relation, destination node type), tensors or ints."""
    return (src_type * len(RELATIONS) + relation) * len(NODE_TYPES) + dst_type


def as_flags(cfg):
    """A ModelConfig, an argparse namespace or a dict (a run's config.json 'model_config') as attributes."""
    return SimpleNamespace(**cfg) if isinstance(cfg, dict) else cfg


def dialogue_graph(stage, cfg, speakers):
    """One dialogue's EIGNN ('EIG') or ECGNN ('ECG') graph as a Data (see the module docstring).

    speakers: (n,) long, the speaker index of each turn; cfg: the model flags (as_flags)."""
    cfg, speakers = as_flags(cfg), torch.as_tensor(speakers, dtype=torch.long).cpu()
    blocks = graph.graph_blocks(cfg, stage)
    g = graph.stage_graph(stage, cfg, blocks, torch.ones(1, len(speakers), dtype=torch.bool), speakers[None])
    n, nb = len(speakers), len(blocks)
    types = torch.tensor([BLOCK_TYPE[b] for b in blocks])
    # inside a block: the same turn pairs in every block
    _, dst, src = g.within.nonzero(as_tuple=True)
    count = g.within[0, dst, src].long()
    k = torch.arange(nb)[:, None]
    relation = (src > dst).long()                                  # 0 to_later, 1 to_earlier
    inside = (k * n + src, k * n + dst, edge_type_index(types[k], relation, types[k]), count.expand(nb, -1))
    # between the blocks of one turn: the same block pairs in every turn
    i, j = g.cross.nonzero(as_tuple=True)
    count = g.cross[i, j].long()
    t = torch.arange(n)[:, None]
    same_turn = edge_type_index(types[j], RELATIONS.index('same_turn'), types[i])
    between = (j * n + t, i * n + t, same_turn.expand(n, -1), count.expand(n, -1))
    src, dst, etype, count = (torch.cat([a.flatten(), b.flatten()]) for a, b in zip(inside, between))
    src, dst, etype = (x.repeat_interleave(count) for x in (src, dst, etype))
    order = torch.argsort(dst * (nb * n) + src, stable=True)
    return Data(edge_index=torch.stack([src[order], dst[order]]), edge_type=etype[order],
                node_type=types.repeat_interleave(n), utt=torch.arange(n).repeat(nb), num_nodes=nb * n)


def stage_graphs(stage, cfg, lengths, speakers):
    """The graphs of a batch's dialogues as one torch_geometric Batch.

    lengths: turns per dialogue; speakers: (N,) long, every turn's speaker index, dialogue after dialogue."""
    parts = torch.as_tensor(speakers, dtype=torch.long).cpu().split(list(lengths))
    return Batch.from_data_list([dialogue_graph(stage, cfg, s) for s in parts])


def pyg_graphs(batch, cfg):
    """EIGNN and ECGNN of a dataloader.Batch under the model flags cfg: {'EIG': Batch, 'ECG': Batch}.

    The speakers are the model's (each turn's qmask argmax); cfg is a ModelConfig, the parsed flags or a
    run folder's config.json 'model_config' dict."""
    speakers = torch.cat([batch.qmask[:n, b].argmax(-1) for b, n in enumerate(batch.lengths)])
    return {stage: stage_graphs(stage, cfg, batch.lengths, speakers) for stage in ('EIG', 'ECG')}


def to_hetero(data):
    """A Data of dialogue_graph as a HeteroData: node types NODE_TYPES, edge types EDGE_TYPES (those present).
    A node type's nodes keep their order (its turns in order); edge_index is numbered per node type."""
    present = sorted(set(data.edge_type.tolist()))
    remap = torch.full((len(EDGE_TYPES),), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    hetero = data.to_heterogeneous(node_type=data.node_type, edge_type=remap[data.edge_type],
                                   node_type_names=list(NODE_TYPES), edge_type_names=[EDGE_TYPES[e] for e in present])
    for node_type in hetero.node_types:
        hetero[node_type].num_nodes = hetero[node_type].utt.numel()
    return hetero


def connected_turns(speakers, cfg):
    """The turns each turn is connected to, in EIGNN and ECGNN under the flags cfg, for one dialogue.

    speakers: each turn's speaker (any hashable labels, or indices). Returns {'EIG': [...], 'ECG': [...]}
    with, per turn t, the sorted turns s != t joined to t by an edge inside a block (in either direction; every
    block has the same ones): graph.turn_edges, the edges dialogue_graph repeats in each block."""
    ids = {}
    index = [ids.setdefault(s, len(ids)) for s in speakers]
    out = {}
    for stage in ('EIG', 'ECG'):
        counts = graph.turn_edges(stage, as_flags(cfg), index)
        joined = (counts + counts.t()) > 0
        out[stage] = [row.nonzero().flatten().tolist() for row in joined]
    return out


def node_rows(g, blocks, lengths):
    """For every node of a stage_graphs Batch g: (its block's position in blocks, its row in dialogue order)."""
    position = torch.full((len(NODE_TYPES),), -1, dtype=torch.long)
    position[[BLOCK_TYPE[b] for b in blocks]] = torch.arange(len(blocks))
    first_row = torch.tensor([0] + list(lengths[:-1])).cumsum(0)
    return position[g.node_type], first_row[g.batch] + g.utt


# ----------------------------------------------------------------------------- the convolutions

def symmetric_norm(edge_index, num_nodes, counted_at):
    """c(j)^-1/2 c(i)^-1/2 of every edge j -> i (E,), c each node's degree counted at edge_index[counted_at]
    (0: out-degree, 1: in-degree; duplicate edges counted, 0^-1/2 := 0)."""
    scale = graph.inv_sqrt(degree(edge_index[counted_at], num_nodes))
    return scale[edge_index[0]] * scale[edge_index[1]]


class DegreeNormConv(MessagePassing):
    """What both layers share: sum aggregation, a `gate` Linear(2h, 1) (ECGNN's gate; in EIGNN's layers it exists
    in the reference's checkpoints and is unused), and coefficients(edge_index, num_nodes) = c(j)^-1/2 c(i)^-1/2
    of every edge j -> i, (E,), with c the degree counted at edge_index[counted_at] (0: out-degree, 1: in-degree)."""
    counted_at = 0

    def __init__(self, h):
        super().__init__(aggr='add')
        self.gate = nn.Linear(2 * h, 1)

    @classmethod
    def coefficients(cls, edge_index, num_nodes):
        return symmetric_norm(edge_index, num_nodes, cls.counted_at)


class GatedConv(DegreeNormConv):
    r"""ECGNN layer as a MessagePassing: graph.GatedConv over an edge_index,

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \rightarrow i} c(j)^{-1/2} \, c(i)^{-1/2} \, \mathbf{x}_j
        \tanh\left(g([\mathbf{x}_i, \mathbf{x}_j])\right)

    with c the out-degree counted over the edges of edge_index (duplicates included, 0^-1/2 := 0) and g
    (self.gate) Linear(2h, 1), computed as w_i . x_i + b + w_j . x_j (two projections per node, not one
    per edge). Shapes: x (num_nodes, h), edge_index (2, E), norm = coefficients(...) (E,) -> (num_nodes, h).
    """
    counted_at = 0                       # out-degrees

    def forward(self, x, edge_index, norm):
        h = x.shape[-1]
        on_dst = x @ self.gate.weight[:, :h].t() + self.gate.bias           # (num_nodes, 1)
        on_src = x @ self.gate.weight[:, h:].t()
        return self.propagate(edge_index, x=x, on_dst=on_dst, on_src=on_src, norm=norm)

    def message(self, x_j, on_dst_i, on_src_j, norm):
        return norm[:, None] * torch.tanh(on_dst_i + on_src_j) * x_j


class NormConv(DegreeNormConv):
    r"""EIGNN layer as a MessagePassing: graph.NormConv over an edge_index,

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \rightarrow i} c(j)^{-1/2} \, c(i)^{-1/2} \, \mathbf{x}_j

    with c the in-degree counted over the edges of edge_index (duplicates included, 0^-1/2 := 0).
    self.gate exists in the reference's checkpoints and is unused. Linear in x with no weights (`linear = True`,
    as graph.NormConv: in training the model runs it in class space). Shapes as GatedConv's.
    """
    linear = True
    counted_at = 1                       # in-degrees

    def forward(self, x, edge_index, norm):
        return self.propagate(edge_index, x=x, norm=norm)

    def message(self, x_j, norm):
        return norm[:, None] * x_j


CONVS = {'ECG': GatedConv, 'EIG': NormConv}


def run_stage(stage, cfg, convs, epsilon, x0, blocks, lengths, spk):
    """model.GraphModel.run_stage on stage_graphs: x0 (nb, N, h) after fc -> (nb, N, h) after the layers
    `x = conv_k(x) + epsilon * x0` (no layer: x0), rows in dialogue order."""
    g = stage_graphs(stage, cfg, lengths, spk)                              # built on the CPU
    block, row, edge_index = (i.to(x0.device) for i in (*node_rows(g, blocks, lengths), g.edge_index))
    x = x0[block, row]                                                      # (num_nodes, h)
    if convs:
        norm = convs[0].coefficients(edge_index, g.num_nodes)
        residual = epsilon * x
        for conv in convs:
            x = conv(x, edge_index, norm) + residual
    return x0.new_zeros(x0.shape).index_put((block, row), x)
