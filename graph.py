"""Graph construction for EIGNN / ECGNN (SPEC 2.6, 2.7) and their two convolutions.

A batch of B dialogues, padded to T utterances, with `nb` node blocks per dialogue (one per
modality, plus the multimodal node `u`), node features (B, nb, T, h). Every edge either stays in
a block (utterance s -> utterance t of the same modality) or stays in an utterance (modality j ->
modality i of the same utterance), so a graph is stored block-dense:
  within (B, T, T)   edge counts [b, dst, src], the same for every block,
  cross  (nb, nb)    edge counts [dst block, src block] inside each utterance,
and a convolution is a batched (T x T) matrix product per block plus a per-utterance mix of the
blocks: the reference's per-edge arithmetic (duplicates counted) without materialising
(edges x hidden) tensors. Padded utterances have no edges.
"""
from typing import NamedTuple

import torch
import torch.nn as nn


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

    def degrees(self, by):
        """Edges leaving ('out') or entering ('in') each node, counted with multiplicity: (B, nb, T)."""
        within = self.within.sum(1) if by == 'out' else self.within.sum(2)
        cross = self.cross.sum(0) if by == 'out' else self.cross.sum(1)
        return within[:, None, :] + cross[None, :, None] * self.valid[:, None, :]

    def normalised(self, by):
        """Coefficients count * c(src)^-1/2 * c(dst)^-1/2 as (within (B, nb, T, T), cross (B, nb, nb, T))."""
        scale = inv_sqrt(self.degrees(by))                                     # (B, nb, T)
        within = self.within[:, None] * scale[:, :, :, None] * scale[:, :, None, :]
        cross = (self.cross[None, :, :, None] * self.valid[:, None, None, :]
                 * scale[:, :, None, :] * scale[:, None, :, :])
        return within, cross

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


def ecgnn_graph(blocks, valid, window_dir, window_dir_f, single_edge, directed_edge):
    """ECGNN (emotional contagion) edges of a padded batch."""
    T = valid.shape[1]
    within = context_edge_counts(T, window_dir, window_dir_f, single_edge, valid.device)
    within = within[None] * (valid[:, :, None] & valid[:, None, :])
    cross = cross_block_counts(blocks, directed_edge, single_edge).to(valid.device)
    return BlockGraph(within, cross, valid)


def eignn_graph(blocks, speakers, valid, window_spk, window_spk_f, single_edge, directed_edge):
    """EIGNN (emotional inertia) edges of a padded batch."""
    within = speaker_edge_counts(speakers, valid, window_spk, window_spk_f)
    cross = cross_block_counts(blocks, directed_edge, single_edge).to(valid.device)
    return BlockGraph(within, cross, valid)


def edge_list(g, blocks, lengths):
    """Edge multiset as sorted rows [dialogue, src_node, src_utt, dst_node, dst_utt, count]."""
    counts = g.dense()
    T = counts.shape[1] // len(blocks)
    rows = []
    for b, dst, src in torch.nonzero(counts).tolist():
        (db, dt), (sb, st) = divmod(dst, T), divmod(src, T)
        rows.append([b, blocks[sb], st, blocks[db], dt, int(counts[b, dst, src].item())])
    return sorted(rows)


def padding_mask(lengths, T, device=None):
    """(B, T) mask of the real utterances of dialogues of these lengths, padded to T."""
    return torch.arange(T, device=device)[None, :] < torch.as_tensor(lengths, device=device)[:, None]


def to_block_nodes(blocks):
    """Stack per-block (T, B, D) features into node features (B, nb, T, D)."""
    return torch.stack(blocks, 0).permute(2, 0, 1, 3)


def from_block_nodes(x, valid):
    """Real utterances of each block, in dialogue order: a list of nb (N, D) tensors."""
    return [x[:, i][valid] for i in range(x.shape[1])]


def length_groups(lengths, min_fill=0.7):
    """Dialogue indices grouped by similar length, longest first, with each group's length.

    A dialogue joins the current group while its (length^2) is at least `min_fill` of the
    group's longest: the graphs' cost per dialogue grows with the square of the padded length.
    """
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    groups = []
    for b in order:
        if groups and lengths[b] ** 2 >= min_fill * groups[-1][1] ** 2:
            groups[-1][0].append(b)
        else:
            groups.append(([b], lengths[b]))
    return groups


def dialogue_order(lengths, groups):
    """Permutation taking rows concatenated group by group back to the batch's dialogue order."""
    starts = [sum(lengths[:b]) for b in range(len(lengths))]
    rows = torch.tensor([starts[b] + t for group in groups for b in group for t in range(lengths[b])])
    return torch.argsort(rows)


def mix_blocks(cross, x):
    """Per-utterance messages between blocks: out[b, i, t] = sum_j cross[b, i, j, t] * x[b, j, t]."""
    return torch.einsum('bijt,bjth->bith', cross, x)


class MultiConv(nn.Module):
    """ECGNN layer: sum over s->t of norm * x_s * tanh(gate([x_t, x_s])), gate split per node."""

    def __init__(self, h):
        super().__init__()
        self.gate = nn.Linear(2 * h, 1)

    def forward(self, x, norm):
        within, cross = norm
        h = x.shape[-1]
        on_dst = x @ self.gate.weight[0, :h] + self.gate.bias            # (B, nb, T)
        on_src = x @ self.gate.weight[0, h:]
        gate_within = torch.tanh(on_dst[..., :, None] + on_src[..., None, :])
        gate_cross = torch.tanh(on_dst[:, :, None, :] + on_src[:, None, :, :])
        out = (within * gate_within) @ x
        return out.add_(mix_blocks(cross * gate_cross, x))


class DirectConv(nn.Module):
    """EIGNN layer: sum over s->t of norm * x_s (the gate exists in checkpoints, unused)."""

    def __init__(self, h):
        super().__init__()
        self.gate = nn.Linear(2 * h, 1)

    def forward(self, x, norm):
        within, cross = norm
        return (within @ x).add_(mix_blocks(cross, x))
