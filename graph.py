"""Graph construction for EIGNN / ECGNN, the layout of their node features, and their two convolutions.

Edges. Every utterance has one node per block (a modality, or the multimodal node `u`), and every
edge either stays in a block (utterance s -> utterance t of the same block) or stays in an
utterance (block j -> block i of the same utterance). So the graph of a padded batch of B
dialogues of T utterances with nb blocks is stored block-dense (BlockGraph):
  within (B, T, T)   edge counts [b, dst, src], the same for every block,
  cross  (nb, nb)    edge counts [dst block, src block] inside each utterance,
counted with multiplicity (duplicate edges are real: they change the degrees). Padded utterances
have no edges.

Node features. The encoders give one row per real utterance, in dialogue order (the utterances of
dialogue 0, then those of dialogue 1, ...): a block's features are (N, h), a graph's (nb, N, h).
The graphs run over groups of dialogues of similar length (length_groups), each group padded to
its own length T_g, a block's features of a group being one (B_g, T_g, h) tensor. A layer is then
one batched (T_g x T_g) matrix product per block plus a per-utterance mix of the blocks: the
reference's per-edge arithmetic, duplicates included, without (edges x h) message tensors.
GroupLayout moves a graph's features from rows to groups with one index_select, and its outputs
back to rows with another. A padded slot holds a copy of its dialogue's first utterance: it has no
edges, so it sends and receives nothing, and its gradient is exactly zero.
"""
from itertools import accumulate
from typing import NamedTuple

import torch
import torch.nn as nn

MODALITIES = 'lav'          # the modality letters of --modals, in the canonical order of blocks and of cat(l, a, v)


def used_modalities(cfg):
    """Modalities of --modals in canonical l, a, v order."""
    return [m for m in MODALITIES if m in cfg.modals]


def graph_blocks(cfg, stage):
    """Node blocks of one graph ('ECG' or 'EIG'): the modalities, plus u where it belongs."""
    has_u = cfg.multimodal_node in ('both', stage)
    return used_modalities(cfg) + (['u'] if has_u else [])


def within_window(distance, window):
    """[distance <= window] where window -1 means unbounded and 0 means none."""
    if window == -1:
        return torch.ones_like(distance, dtype=torch.bool)
    return distance <= window


def context_edge_counts(T, window_dir, window_dir_f, single_edge, device=None):
    """ECGNN edges inside one block, (T, T) indexed [dst, src], for utterances at distance k."""
    idx = torch.arange(T, device=device)
    offset = idx[None, :] - idx[:, None]          # src - dst
    k = offset.abs()
    near_past = within_window(k, window_dir).float()
    near_future = within_window(k, window_dir_f).float()
    both_ways = float(single_edge != 'inter')
    later_to_earlier = near_past + near_future * both_ways     # src = t > dst = s
    earlier_to_later = near_past * both_ways + near_future     # src = s < dst = t
    return torch.where(offset > 0, later_to_earlier,
                       torch.where(offset < 0, earlier_to_later, torch.zeros_like(near_past)))


def speaker_ranks(speakers, valid):
    """Position of each utterance among its own speaker's utterances of the dialogue, (B, T)."""
    n_spk = int(speakers.max()) + 1 if speakers.numel() else 1
    onehot = torch.nn.functional.one_hot(speakers, n_spk) * valid[..., None]
    return (onehot.cumsum(1) * onehot).sum(-1) - 1


def speaker_edge_counts(speakers, valid, window_spk, window_spk_f):
    """EIGNN edges inside one block, (B, T, T) indexed [dst, src]: same speaker, in a window.

    The speaker's utterance number j sends to its utterances j-window_spk..j-1 and
    j+1..j+window_spk_f; the first one (j = 0) sends nothing, as in the reference.
    """
    rank = speaker_ranks(speakers, valid)
    same = (speakers[:, :, None] == speakers[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    rank_dst, rank_src = rank[:, :, None], rank[:, None, :]
    step = rank_dst - rank_src
    backward = (step < 0) & within_window(-step, window_spk)
    forward = (step > 0) & within_window(step, window_spk_f)
    return (same & (rank_src >= 1) & (backward | forward)).float()


def cross_block_counts(blocks, directed_edge, single_edge):
    """Edges between the nodes of one utterance, (nb, nb) indexed [dst, src]."""
    nb = len(blocks)
    counts = torch.zeros(nb, nb)
    modal = [i for i, b in enumerate(blocks) if b != 'u']
    per_pair = 1.0 if single_edge == 'intra' else 2.0
    for i in modal:
        for j in modal:
            if i != j:
                counts[i, j] = per_pair
    if 'u' in blocks:
        u = blocks.index('u')
        for m in directed_edge:
            if m in blocks:
                counts[u, blocks.index(m)] += 1.0
    return counts


class BlockGraph(NamedTuple):
    """Edge counts of a padded batch in block form (see the module docstring)."""
    within: torch.Tensor        # (B, T, T) [b, dst, src]
    cross: torch.Tensor         # (nb, nb) [dst block, src block]
    valid: torch.Tensor         # (B, T) real utterances
    sources: tuple = ()         # per dst block, (src block, count) of the cross edges into it
    past_only: bool = False     # no edge from a later utterance (ModelConfig.causal): see past_only

    def normalising_degrees(self, by):
        """The degrees a convolution normalises by: its own ('out' for ECGNN), but always 'in' in a past-only
        graph, where an utterance's out-degree counts the later utterances it sends to (see past_only)."""
        return self.degrees('in' if self.past_only else by)

    def degrees(self, by):
        """Edges leaving ('out') or entering ('in') each node, counted with multiplicity: (nb, B, T)."""
        within = self.within.sum(1) if by == 'out' else self.within.sum(2)
        cross = self.cross.sum(0) if by == 'out' else self.cross.sum(1)
        return within[None] + cross[:, None, None] * self.valid[None]

    def dense(self):
        """All edge counts as one (B, nb*T, nb*T) matrix [b, dst node, src node]: for inspection."""
        B, T = self.valid.shape
        nb = self.cross.shape[0]
        eye = torch.eye(nb, device=self.within.device)
        same_utt = torch.diag_embed(self.valid.float())
        counts = torch.einsum('ij,bst->bisjt', eye, self.within) + torch.einsum('ij,bst->bisjt', self.cross, same_utt)
        return counts.reshape(B, nb * T, nb * T)


def inv_sqrt(degree):
    """degree^-1/2 with 0^-1/2 := 0."""
    return torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))


def block_graph(within, blocks, valid, directed_edge, single_edge, past_only=False):
    """A BlockGraph from its within-block counts, with the cross-block edges of these flags; past_only keeps
    only the edges from an earlier utterance to a later one (see past_only)."""
    cross = cross_block_counts(blocks, directed_edge, single_edge)
    sources = tuple(tuple((j, count) for j, count in enumerate(row) if count) for row in cross.tolist())
    if past_only:
        within = within.tril(-1)                            # [dst, src] with src < dst
    return BlockGraph(within, cross.to(valid.device), valid, sources, past_only)


# A past-only graph (train.py --causal). The windows are named from the sender's side (speaker_edge_counts and
# context_edge_counts above): window_spk and window_dir are the turns an utterance sends to *before* it, so an
# utterance reads that many turns of its future, and the `_f` windows are the turns it sends to after it, the past
# it is read from. A past-only graph keeps every
# edge of the windows that runs forward in time (the same past, with the same multiplicities, as the full graph)
# and drops those that run backward, whatever the windows. An utterance's out-degree then counts the later
# utterances it sends to, which ECGNN's normalisation would read: a past-only graph normalises by in-degrees
# (the utterances it reads, all earlier), as EIGNN always does. Cross-modal edges stay inside an utterance.

def ecgnn_graph(blocks, valid, window_dir, window_dir_f, single_edge, directed_edge, past_only=False):
    """ECGNN (emotional contagion) edges of a padded batch."""
    T = valid.shape[1]
    within = context_edge_counts(T, window_dir, window_dir_f, single_edge, valid.device)
    within = within[None] * (valid[:, :, None] & valid[:, None, :])
    return block_graph(within, blocks, valid, directed_edge, single_edge, past_only)


def eignn_graph(blocks, speakers, valid, window_spk, window_spk_f, single_edge, directed_edge, past_only=False):
    """EIGNN (emotional inertia) edges of a padded batch."""
    within = speaker_edge_counts(speakers, valid, window_spk, window_spk_f)
    return block_graph(within, blocks, valid, directed_edge, single_edge, past_only)


def stage_graph(stage, cfg, blocks, valid, speakers):
    """The BlockGraph of one graph, ECGNN ('ECG') or EIGNN ('EIG'), of a padded batch under the model flags cfg
    (window_*, single_edge, directed_edge, causal: past only; flags without it, as the viewer's, are a full
    model's): valid (B, T) the real utterances, speakers (B, T) their speaker index."""
    past_only = getattr(cfg, 'causal', False)
    if stage == 'ECG':
        return ecgnn_graph(blocks, valid, cfg.window_dir, cfg.window_dir_f, cfg.single_edge, cfg.directed_edge,
                           past_only)
    return eignn_graph(blocks, speakers, valid, cfg.window_spk, cfg.window_spk_f, cfg.single_edge,
                       cfg.directed_edge, past_only)


def turn_edges(stage, cfg, speakers):
    """One dialogue's edges between its turns in ECGNN ('ECG') or EIGNN ('EIG') under the model flags cfg: (n, n)
    edge counts [dst, src], duplicates counted, the same in every block (stage_graph's within). speakers: (n,)
    each turn's speaker index (a list, array or tensor; copied: a read-only array is never shared)."""
    speakers = torch.tensor([int(s) for s in speakers], dtype=torch.long)
    valid = torch.ones(1, len(speakers), dtype=torch.bool)
    return stage_graph(stage, cfg, [], valid, speakers[None]).within[0]


def edge_list(g, blocks):
    """Edge multiset as sorted rows [dialogue, src_node, src_utt, dst_node, dst_utt, count]."""
    counts = g.dense()
    T = counts.shape[1] // len(blocks)
    rows = []
    for b, dst, src in torch.nonzero(counts).tolist():
        (db, dt), (sb, st) = divmod(dst, T), divmod(src, T)
        rows.append([b, blocks[sb], st, blocks[db], dt, int(counts[b, dst, src].item())])
    return sorted(rows)


# ----------------------------------------------------------------------------- groups of similar length

GROUP_OVERHEAD = 4096   # a group's fixed cost, in (utterance x utterance) pairs of padded work: see length_groups


def length_groups(lengths, overhead=GROUP_OVERHEAD):
    """Dialogue indices grouped by similar length, longest first, with each group's length.

    A group of n dialogues padded to length T costs about n * T^2 (its (T x T) products and gates) plus a
    fixed `overhead` in the same units (the operations every group runs, whatever its size). The groups
    are runs of the dialogues sorted by length, chosen for the least total cost (dynamic programming over
    where each group starts): short dialogues (MELD's) end up in one group, where padding is cheap; long
    ones of different lengths (IEMOCAP's) in several, where it is not.
    """
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    longest = [lengths[b] for b in order]
    best, start = [0.0] + [float('inf')] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):            # the first `end` dialogues, the last group from start[end]
        for first in range(end):
            cost = best[first] + overhead + (end - first) * longest[first] ** 2
            if cost < best[end]:
                best[end], start[end] = cost, first
    groups, end = [], len(order)
    while end:
        groups.append((order[start[end]:end], longest[start[end]]))
        end = start[end]
    return groups[::-1]


class GroupLayout:
    """A batch's dialogues in groups of similar length, and the moves between rows and groups.

    slots[g] (B_g, T_g): the row (dialogue order) each slot of group g holds; a padded slot holds
    its dialogue's first row. valid[g] (B_g, T_g): the real slots.
    """

    def __init__(self, lengths, device=None, overhead=GROUP_OVERHEAD):
        self.n_rows, self.lengths = sum(lengths), list(lengths)
        first_row = list(accumulate([0] + list(lengths[:-1])))
        self._slots, self._valid = [], []
        for members, T in length_groups(lengths, overhead):
            t = torch.arange(T)
            valid = t[None, :] < torch.tensor([lengths[b] for b in members])[:, None]      # (B_g, T_g)
            self._slots.append(torch.tensor([first_row[b] for b in members])[:, None] + t * valid)
            self._valid.append(valid)
        self.device = device
        self.slots = [s.to(device) for s in self._slots]
        self.valid = [v.to(device) for v in self._valid]

    def to_groups(self, x):
        """(nb, N, h) rows -> per group nb tensors (B_g, T_g, h), with one index_select."""
        nb, N, h = x.shape
        blocks = torch.arange(nb)[:, None] * N
        index = torch.cat([(blocks + s.flatten()[None]).flatten() for s in self._slots]).to(self.device)
        parts = x.reshape(nb * N, h).index_select(0, index).split([nb * s.numel() for s in self._slots])
        return [part.view(nb, *s.shape, h).unbind(0) for part, s in zip(parts, self._slots)]

    def to_rows(self, parts):
        """Per group k tensors (B_g, T_g, h) -> (k, N, h) rows of the real slots, in dialogue order."""
        k, h = len(parts[0]), parts[0][0].shape[-1]
        index = torch.empty(k, self.n_rows, dtype=torch.long)
        offset = 0
        for s, v in zip(self._slots, self._valid):
            position = offset + torch.arange(k)[:, None] * s.numel() + torch.arange(s.numel())[None]   # (k, B_g*T_g)
            index[:, s[v]] = position[:, v.flatten()]
            offset += k * s.numel()
        flat = torch.cat([block.reshape(-1, h) for blocks in parts for block in blocks])
        return flat.index_select(0, index.flatten().to(self.device)).view(k, self.n_rows, h)


# ----------------------------------------------------------------------------- the convolutions

class GatedConvCoefficients(NamedTuple):
    """What GatedConv.forward needs of a group's BlockGraph, computed once for all its layers."""
    within: torch.Tensor    # (nb, B, T, T) count(s->t) c(s)^-1/2 c(t)^-1/2 of the edges inside each block
    cross: torch.Tensor     # (nb, nb, B, T) [dst block, src block] the same for the edges inside each utterance
    sources: tuple          # BlockGraph.sources: per dst block, (src block, count) of the cross edges


class NormConvCoefficients(NamedTuple):
    """What NormConv.forward needs of a group's BlockGraph, computed once for all its layers."""
    within: torch.Tensor    # (B, T, T) edge counts inside a block (the same for every block)
    sources: tuple          # BlockGraph.sources: per dst block, (src block, count) of the cross edges
    scale: torch.Tensor     # (nb, B, T, 1) c^-1/2 of every node, c its in-degree


class GatedConv(nn.Module):
    r"""ECGNN layer (emotional contagion): a gated graph convolution normalised by out-degrees,

    .. math::
        \mathbf{x}^{\prime}_t = \sum_{s \rightarrow t} c(s)^{-1/2} \, c(t)^{-1/2} \, \mathbf{x}_s
        \tanh\left(g([\mathbf{x}_t, \mathbf{x}_s])\right)

    i.e. x'_t = sum_{s->t} c(s)^-1/2 c(t)^-1/2 x_s tanh(g([x_t, x_s])): the sum runs over the edges
    s -> t into node t, counted with multiplicity (a duplicated edge sends twice); c(n) is the number of
    edges leaving node n (its out-degree, duplicates counted; 0^-1/2 := 0); g (self.gate) is
    Linear(2h, 1) on the concatenation, target first, computed as a target and a source projection,
    g([x_t, x_s]) = w_t . x_t + b + w_s . x_s.

    Args:
        h (int): node feature size.

    Shapes (forward(x, coef, residual, blocks)):
        - **x:** nb tensors (B, T, h), the node features of a group of dialogues, one per block
        - **coef:** GatedConv.coefficients(g) of the group's BlockGraph g
        - **residual:** nb tensors (B, T, h), added to x'
        - **blocks:** a slice of the blocks to compute (default: all)
        - **output:** k tensors (B, T, h), x' + residual of those k blocks
    """

    def __init__(self, h):
        super().__init__()
        self.gate = nn.Linear(2 * h, 1)

    @staticmethod
    def coefficients(g):
        """count(s->t) c(s)^-1/2 c(t)^-1/2 of every edge, a GatedConvCoefficients."""
        scale = inv_sqrt(g.normalising_degrees('out'))                              # (nb, B, T)
        within = g.within[None] * scale[..., :, None] * scale[..., None, :]
        cross = g.cross[:, :, None, None] * g.valid[None, None] * scale[:, None] * scale[None, :]
        return GatedConvCoefficients(within, cross, g.sources)

    def forward(self, x, coef, residual, blocks=slice(None)):
        within, cross, sources = coef
        h = x[0].shape[-1]
        on_dst = [xi @ self.gate.weight[0, :h] + self.gate.bias for xi in x]       # nb x (B, T)
        on_src = [xi @ self.gate.weight[0, h:] for xi in x]
        out = []
        for i in range(len(x))[blocks]:
            gate = torch.tanh(on_dst[i][:, :, None] + on_src[i][:, None, :])        # (B, T, T) [dst, src]
            messages = torch.bmm(within[i] * gate, x[i])                            # (B, T, h) from the block
            for j, _ in sources[i]:                                                 # from the utterance's other blocks
                gate = torch.tanh(on_dst[i] + on_src[j])                            # (B, T)
                messages.addcmul_((cross[i, j] * gate)[..., None], x[j])
            out.append(messages.add_(residual[i]))
        return out


class NormConv(nn.Module):
    r"""EIGNN layer (emotional inertia): a graph convolution normalised by in-degrees,

    .. math::
        \mathbf{x}^{\prime}_t = \sum_{s \rightarrow t} c(s)^{-1/2} \, c(t)^{-1/2} \, \mathbf{x}_s

    i.e. x'_t = sum_{s->t} c(s)^-1/2 c(t)^-1/2 x_s: the sum runs over the edges s -> t into node t,
    counted with multiplicity; c(n) is the number of edges entering node n (its in-degree, duplicates
    counted; 0^-1/2 := 0). Computed as x'_t = c(t)^-1/2 (A y)_t with y_s = c(s)^-1/2 x_s and A the
    edge counts. self.gate exists in the reference's checkpoints and is unused. The layer is linear in x
    with no weights (`linear = True`): in training, model.GraphModel runs it in class space.

    Args and shapes as GatedConv's (coef: NormConv.coefficients(g)).
    """
    linear = True

    def __init__(self, h):
        super().__init__()
        self.gate = nn.Linear(2 * h, 1)

    @staticmethod
    def coefficients(g):
        """Edge counts within a block, the cross-block counts and c^-1/2 of every node: a NormConvCoefficients."""
        return NormConvCoefficients(g.within, g.sources, inv_sqrt(g.normalising_degrees('in'))[..., None])

    def forward(self, x, coef, residual, blocks=slice(None)):
        within, sources, scale = coef
        y = [xi * si for xi, si in zip(x, scale)]                                   # nb x (B, T, h)
        out = []
        for i in range(len(x))[blocks]:
            sums = torch.bmm(within, y[i])                                          # (A y)_t over the block
            for j, count in sources[i]:                                             # and the utterance's other blocks
                sums.add_(y[j], alpha=count)
            out.append(sums.mul_(scale[i]).add_(residual[i]))
        return out
