"""Graph construction for EIGNN / ECGNN (SPEC 2.6, 2.7) and their two convolutions.

A batch of B dialogues, padded to T utterances, with `nb` node blocks per dialogue (one per
modality, plus the multimodal node `u`) is laid out densely: node `block * T + t` of dialogue b.
Edges are an edge-count matrix A of shape (B, nb*T, nb*T) indexed A[b, dst, src] (duplicates are
real and counted); padded utterances have no edges. Each convolution is then a batched matrix
product with the degree-normalised counts, which is the reference's per-edge arithmetic without
materialising (edges x hidden) tensors.
"""
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


def assemble(within, cross, valid):
    """Full edge counts (B, nb*T, nb*T): `within` on every diagonal block, `cross` per utterance."""
    B, T = valid.shape
    nb = cross.shape[0]
    eye = torch.eye(nb, device=within.device)
    same_utt = torch.diag_embed(valid.float())
    counts = (torch.einsum('ij,bst->bisjt', eye, within)
              + torch.einsum('ij,bst->bisjt', cross.to(within.device), same_utt))
    return counts.reshape(B, nb * T, nb * T)


def inv_sqrt(degree):
    """degree^-1/2 with 0^-1/2 := 0."""
    return torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))


def symmetric_norm(counts, by):
    """counts * c(src)^-1/2 * c(dst)^-1/2, c the out-degree ('out') or in-degree ('in')."""
    degree = counts.sum(1) if by == 'out' else counts.sum(2)
    scale = inv_sqrt(degree)
    return counts * scale[:, :, None] * scale[:, None, :]


def ecgnn_counts(blocks, valid, window_dir, window_dir_f, single_edge, directed_edge):
    """ECGNN (emotional contagion) edge counts for a padded batch."""
    T = valid.shape[1]
    within = context_edge_counts(T, window_dir, window_dir_f, single_edge, valid.device)
    within = within[None] * (valid[:, :, None] & valid[:, None, :])
    return assemble(within, cross_block_counts(blocks, directed_edge, single_edge), valid)


def eignn_counts(blocks, speakers, valid, window_spk, window_spk_f, single_edge, directed_edge):
    """EIGNN (emotional inertia) edge counts for a padded batch."""
    within = speaker_edge_counts(speakers, valid, window_spk, window_spk_f)
    return assemble(within, cross_block_counts(blocks, directed_edge, single_edge), valid)


def edge_list(counts, blocks, lengths):
    """Edge multiset as sorted rows [dialogue, src_node, src_utt, dst_node, dst_utt, count]."""
    T = counts.shape[1] // len(blocks)
    rows = []
    for b, dst, src in torch.nonzero(counts).tolist():
        (db, dt), (sb, st) = divmod(dst, T), divmod(src, T)
        assert dt < lengths[b] and st < lengths[b]
        rows.append([b, blocks[sb], st, blocks[db], dt, int(counts[b, dst, src].item())])
    return sorted(rows)


def to_dense_nodes(blocks):
    """Stack per-block (T, B, D) features into dense node features (B, nb*T, D)."""
    x = torch.stack(blocks, 0)                      # (nb, T, B, D)
    nb, T, B, D = x.shape
    return x.permute(2, 0, 1, 3).reshape(B, nb * T, D)


def from_dense_nodes(x, nb, valid):
    """Inverse of to_dense_nodes, keeping real utterances only: a list of nb (N, D) tensors."""
    B, T = valid.shape
    x = x.reshape(B, nb, T, -1)
    return [x[:, i][valid] for i in range(nb)]


class MultiConv(nn.Module):
    """ECGNN layer: sum over s->t of norm * x_s * tanh(gate([x_t, x_s]))."""

    def __init__(self, h):
        super().__init__()
        self.gate = nn.Linear(2 * h, 1)

    def forward(self, x, norm):
        h = x.shape[-1]
        w_dst, w_src = self.gate.weight[0, :h], self.gate.weight[0, h:]
        on_dst = x @ w_dst + self.gate.bias               # (B, M)
        on_src = x @ w_src
        weights = norm * torch.tanh(on_dst[:, :, None] + on_src[:, None, :])
        return weights @ x


class DirectConv(nn.Module):
    """EIGNN layer: sum over s->t of norm * x_s (the gate exists in checkpoints, unused)."""

    def __init__(self, h):
        super().__init__()
        self.gate = nn.Linear(2 * h, 1)

    def forward(self, x, norm):
        return norm @ x
