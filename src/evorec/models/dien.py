"""DIEN (Zhou et al., 2019) as a next-item scorer: interest extraction, then candidate-aware evolution.

1. **Interest extractor.** A GRU over the event embeddings (item + category + behaviour by default)
   gives an interest state h_t after every event (``interests``; causal, left padding handled as
   in GRU4Rec). ``forward`` returns the stage-1 states q_t = P h_t (a linear map: the GRU state is
   tanh-bounded, P lets the logits take any scale). The paper's auxiliary loss supervises every
   h_t with the *next* event: h_t . e_{t+1} should beat h_t . e_neg for a sampled item (weight
   ``aux_weight``).
2. **Interest evolution (AUGRU).** For a candidate item c with embedding e_c, attention
   a_t = softmax_t(h_t W e_c) over the history scales the GRU's update gate:

       u'_t = a_t * u_t,    h'_t = (1 - u'_t) * h'_{t-1} + u'_t * tanh(...)

   so only the interests relevant to c move the evolved state h'_T(c).
3. **Candidate score** (a logit): ``q_T . e_c + MLP([h'_T(c), e_c, h'_T(c) * e_c])``, i.e. the
   cheap stage-1 logit plus a learned candidate-aware correction. (The paper's final MLP also takes
   a user profile and context; evorec has no user features, see Caser's note.)

Candidate items are embedded as item + category (of the item, from ``DataSizes.item_category``):
the behaviour of a future event is unknown. The same table is the output table of stage 1.

**Full ranking.** The AUGRU depends on the candidate, so running it for every item of the
catalogue (B x n_items recurrences) is too expensive. ``score`` therefore ranks in two stages:

- stage 1 scores all items with the candidate-independent state of the last event: q_T . e_i;
- stage 2 re-scores the top ``rerank_k`` of them with the full candidate score above. Their scores
  are replaced by the candidate scores (exactly what ``score_candidates`` returns), and the other
  items' stage-1 scores are shifted down, order kept, so that every reranked item stays above
  every other item. Stage 2 only reorders the top k; ``rerank_k = 0`` gives stage 1 alone.

``score_candidates(batch, items)`` gives the candidate score for an explicit (B, C) list, for
pointwise CTR-style metrics (AUC, GAUC).

**Training** (``training_loss``): the given next-item loss on the stage-1 states q_t at every
position + ``aux_weight`` * auxiliary loss + ``ctr_weight`` * binary cross-entropy of the candidate
score of the target and ``ctr_negatives`` sampled negatives at the last position of each sequence
that has a target (the AUGRU runs only there, not at every position). By default
(``ctr_negative_source = "stage1_top"``) this term is trained as it is used: only on sequences whose
target is in the stage-1 top pool, against negatives from that pool (see ``ctr_negative_items``);
``uniform`` draws negatives from the whole catalogue for every sequence, as the paper does.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from evorec.models.base import NEG_INF, DataSizes, LossFn, ModelConfig, SequentialModel, SideInfoConfig
from evorec.models.gru4rec import left_padded_gru
from evorec.models.layers.embeddings import EventEmbedding, init_side_tables
from evorec.models.registry import register_model
from evorec.ops.dropout import Dropout
from evorec.types import SequenceBatch


def sample_items(n_items: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform item indices in [1, n_items), drawn with ``generator`` (on its own device) if given."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(1, max(n_items, 2), shape, generator=generator, device=gen_device).to(device)


def _dien_side() -> SideInfoConfig:
    return SideInfoConfig(use_category=True, use_behavior=True)


class DIENConfig(ModelConfig):
    embed_dim: int = Field(64, ge=1, description="D: embeddings, extractor and AUGRU states")
    dropout: float = Field(0.25, ge=0.0, lt=1.0, description="on the event embeddings")
    aux_weight: float = Field(1.0, ge=0.0, description="weight of the auxiliary next-event loss")
    ctr_weight: float = Field(1.0, ge=0.0, description="weight of the candidate-aware BCE term")
    ctr_negatives: int = Field(4, ge=1, description="negatives per sequence in the candidate-aware term")
    ctr_negative_source: Literal["stage1_top", "uniform"] = Field(
        "stage1_top",
        description="stage1_top: from the stage-1 top max(rerank_k, ctr_negatives), on rows whose target is there; uniform: any item",
    )
    head_hidden: int = Field(64, ge=1, description="hidden units of the candidate-score MLP")
    rerank_k: int = Field(100, ge=0, description="score(): stage-1 top items re-scored with the AUGRU (0: none)")
    side: SideInfoConfig = Field(default_factory=_dien_side)


@register_model("dien", DIENConfig)
class DIEN(SequentialModel):
    causal = True

    def __init__(self, config: DIENConfig, sizes: DataSizes):
        super().__init__(config, sizes)
        c = config
        D = c.embed_dim
        self.embed = EventEmbedding(D, c.side, sizes)
        init_side_tables(self.embed)
        self.drop = Dropout(c.dropout)
        self.extractor = nn.GRU(D, D, batch_first=True)
        # Stage-1 query: the GRU state is tanh-bounded, so a linear map lets its logits take any scale.
        self.query_proj = nn.Linear(D, D)
        # AUGRU: a GRU cell's parameters, run by hand in ``evolve`` (the update gate is rescaled).
        self.augru = nn.GRUCell(D, D)
        self.att = nn.Parameter(torch.empty(D, D))  # W in a_t ~ exp(h_t W e_c)
        nn.init.xavier_uniform_(self.att)
        self.head = nn.Sequential(nn.Linear(3 * D, c.head_hidden), nn.PReLU(), nn.Linear(c.head_hidden, 1))
        ic = sizes.item_category
        use_cat = self.embed.category is not None and ic is not None
        # Category of every item, for candidate embeddings; derived from sizes, so not checkpointed.
        self.register_buffer(
            "item_category", torch.tensor(ic if use_cat else [], dtype=torch.long), persistent=False
        )

    # -- embeddings -------------------------------------------------------------------------------

    def candidate_embedding(self, items: Tensor) -> Tensor:
        """(..., D) embedding of candidate items: item [+ text] + its category (when categories are used)."""
        # F.embedding, not table[items]: advanced-indexing backward accumulates in a thread-dependent
        # order on CPU (not bitwise reproducible); the embedding backward is.
        e = F.embedding(items, self.embed.item_vectors())  # (..., D)
        if self.item_category.numel():
            e = e + self.embed.category(self.item_category[items])
        return e

    def output_embeddings(self) -> Tensor:
        return self.candidate_embedding(torch.arange(self.n_items, device=self.embed.item.weight.device))  # (n_items, D)

    # -- stage 1: interest extractor --------------------------------------------------------------

    def interests(self, batch: SequenceBatch) -> Tensor:
        """(B, T, D) extractor (interest) states h_t; 0 at padding."""
        x = self.drop(self.embed(batch))  # (B, T, D)
        return left_padded_gru(self.extractor, x, batch.mask)  # (B, T, D)

    def forward(self, batch: SequenceBatch) -> Tensor:
        """(B, T, D) stage-1 states (projected interest states), scored against ``output_embeddings``."""
        return self.query_proj(self.interests(batch))  # (B, T, D)

    # -- stage 2: interest evolution --------------------------------------------------------------

    def evolve(self, h: Tensor, mask: Tensor, e: Tensor) -> Tensor:
        """(B, C, D) AUGRU state after the history, for each of C candidates per row.

        h: (B, T, D) interest states, mask: (B, T) positions the AUGRU may attend to,
        e: (B, C, D) candidate embeddings. Masked positions get zero attention, so they leave the
        state unchanged (it starts at 0); an empty history gives the zero state.
        """
        B, T, D = h.shape
        C = e.shape[1]
        logits = torch.einsum("btd,de,bce->bct", h, self.att, e) * D**-0.5  # (B, C, T)
        keep = mask[:, None, :]  # (B, 1, T)
        # A large finite negative (not -inf) keeps all-masked rows free of NaN: they get a uniform
        # softmax, which the multiplication by the mask then zeroes.
        a = torch.softmax(logits.masked_fill(~keep, torch.finfo(logits.dtype).min), dim=-1) * keep  # (B, C, T)
        cell = self.augru
        gi = h @ cell.weight_ih.T + cell.bias_ih  # (B, T, 3D): the input side does not depend on c
        state = h.new_zeros(B, C, D)
        active = mask.any(0)  # (T,)
        t0 = int(active.float().argmax()) if bool(active.any()) else T  # skip columns that are padding in every row
        for t in range(t0, T):
            gh = state @ cell.weight_hh.T + cell.bias_hh  # (B, C, 3D)
            i_r, i_z, i_n = gi[:, t, None].chunk(3, dim=-1)  # (B, 1, D) each
            h_r, h_z, h_n = gh.chunk(3, dim=-1)  # (B, C, D) each
            r = torch.sigmoid(i_r + h_r)
            update = 1 - torch.sigmoid(i_z + h_z)  # PyTorch's z keeps the old state; DIEN's u = 1 - z
            n = torch.tanh(i_n + r * h_n)
            u = a[:, :, t, None] * update  # (B, C, D): attention-scaled update gate
            state = (1 - u) * state + u * n
        return state

    def candidate_logits(self, h: Tensor, mask: Tensor, query: Tensor, items: Tensor) -> Tensor:
        """(B, C) candidate scores: stage-1 logit + AUGRU/MLP correction.

        h: (B, T, D) interest states, mask: (B, T), query: (B, D) stage-1 state at the query
        position, items: (B, C) candidate item indices.
        """
        e = self.candidate_embedding(items)  # (B, C, D)
        evolved = self.evolve(h, mask, e)  # (B, C, D)
        base = (query[:, None, :] * e).sum(-1)  # (B, C)
        feats = torch.cat([evolved, e, evolved * e], dim=-1)  # (B, C, 3D)
        return base + self.head(feats).squeeze(-1)  # (B, C)

    def score_candidates(self, batch: SequenceBatch, items: Tensor) -> Tensor:
        """(B, C) pointwise (CTR-style) logits of the given candidates; item 0 (padding) gets -inf."""
        h = self.interests(batch)  # (B, T, D)
        s = self.candidate_logits(h, batch.mask, self.query_proj(h[:, -1]), items)
        return s.masked_fill(items == 0, NEG_INF)

    def score(self, batch: SequenceBatch) -> Tensor:
        """(B, n_items): stage-1 scores of all items, the top ``rerank_k`` re-scored (see module doc)."""
        h = self.interests(batch)  # (B, T, D)
        query = self.query_proj(h[:, -1])  # (B, D)
        s = query @ self.output_embeddings().T  # (B, n_items)
        s[:, 0] = NEG_INF
        k = min(self.config.rerank_k, self.n_items - 1)
        if k <= 0:
            return s
        top = s.topk(k, dim=1).indices  # (B, k)
        r = self.candidate_logits(h, batch.mask, query, top)  # (B, k)
        if k < self.n_items - 1:
            # Shift the others (order kept) so that the best of them sits 1 below the worst reranked.
            rest_max = s.scatter(1, top, NEG_INF).max(dim=1, keepdim=True).values  # (B, 1)
            s = s - rest_max + (r.min(dim=1, keepdim=True).values - 1.0)
        s = s.scatter(1, top, r)
        s[:, 0] = NEG_INF
        return s

    # -- training ---------------------------------------------------------------------------------

    def ctr_negative_items(self, query: Tensor, pos_item: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Negatives (R, n) for the candidate-aware term and which of the R rows to train it on.

        query: (R, D) stage-1 states, pos_item: (R,) targets. ``uniform``: any item, every row.
        ``stage1_top``: the term is trained the way ``score`` uses it. The AUGRU head only ever
        reranks the stage-1 top k, so it learns on the rows whose target is in the stage-1 top
        pool = max(rerank_k, n), against negatives drawn uniformly from that pool. (Trained on all
        rows, it would learn to tell every target from top-pool items, i.e. to push down what
        stage 1 ranks high, which is exactly wrong inside the top k.)
        """
        c = self.config
        n = c.ctr_negatives
        R = pos_item.shape[0]
        pool = min(max(c.rerank_k, n), self.n_items - 1)
        if c.ctr_negative_source == "uniform" or pool < 2:
            return sample_items(self.n_items, (R, n), generator, query.device), torch.ones_like(pos_item, dtype=torch.bool)
        with torch.no_grad():
            s1 = query @ self.output_embeddings().T  # (R, n_items)
            s1[:, 0] = NEG_INF
            top = s1.topk(pool, dim=1).indices  # (R, pool)
        keep = (top == pos_item[:, None]).any(1)  # (R,) target inside the pool
        pick = sample_items(pool + 1, (R, n), generator, query.device) - 1  # (R, n) uniform in [0, pool)
        return top.gather(1, pick), keep  # a pick equal to the target is masked out by the caller

    def training_loss(self, batch: SequenceBatch, loss_fn: LossFn, generator: torch.Generator | None = None) -> Tensor:
        c = self.config
        h = self.interests(batch)  # (B, T, D)
        states = self.query_proj(h)  # (B, T, D): what ``forward`` returns
        T = h.shape[1]
        sel = batch.targets > 0  # (B, T)
        loss = loss_fn(states[sel], batch.targets[sel], self.output_embeddings(), None)

        if c.aux_weight > 0 and T > 1:
            # h_t against the next event of the history (t+1 <= T-1) vs a uniformly sampled item.
            nxt = batch.items[:, 1:]  # (B, T-1)
            valid = batch.mask[:, :-1] & batch.mask[:, 1:] & (nxt > 0)  # (B, T-1)
            if bool(valid.any()):
                hv = h[:, :-1][valid]  # (N, D)
                pos_item = nxt[valid]  # (N,)
                neg_item = sample_items(self.n_items, tuple(pos_item.shape), generator, h.device)  # (N,)
                pos = (hv * self.candidate_embedding(pos_item)).sum(-1)  # (N,)
                neg = (hv * self.candidate_embedding(neg_item)).sum(-1)  # (N,)
                neg_ok = (neg_item != pos_item).to(h.dtype)
                aux = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + (
                    F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none") * neg_ok
                ).sum() / neg_ok.sum().clamp(min=1)
                loss = loss + c.aux_weight * aux

        rows = sel.any(1)  # (B,) sequences with at least one target
        if c.ctr_weight > 0 and bool(rows.any()):
            # The AUGRU runs once per sequence: at its last position with a target t*, attending
            # to positions <= t* (later ones are masked, so the state is the one at t*).
            ar = torch.arange(T, device=h.device)
            last = torch.where(sel, ar, -1).max(dim=1).values[rows]  # (R,) t* of each kept row
            hr = h[rows]  # (R, T, D)
            R = hr.shape[0]
            att_mask = batch.mask[rows] & (ar[None, :] <= last[:, None])  # (R, T)
            query = states[rows][torch.arange(R, device=h.device), last]  # (R, D)
            pos_item = batch.targets[rows, last]  # (R,)
            neg_item, keep = self.ctr_negative_items(query, pos_item, generator)  # (R, n), (R,)
            if bool(keep.any()):
                hr, att_mask, query = hr[keep], att_mask[keep], query[keep]
                pos_item, neg_item = pos_item[keep], neg_item[keep]
                items = torch.cat([pos_item[:, None], neg_item], dim=1)  # (R', 1+n)
                logit = self.candidate_logits(hr, att_mask, query, items)  # (R', 1+n)
                pos_bce = F.binary_cross_entropy_with_logits(logit[:, 0], torch.ones_like(logit[:, 0]), reduction="none")
                neg_ok = (neg_item != pos_item[:, None]).to(logit.dtype)  # (R', n)
                neg_bce = F.binary_cross_entropy_with_logits(logit[:, 1:], torch.zeros_like(logit[:, 1:]), reduction="none")
                neg_bce = (neg_bce * neg_ok).sum(1) / neg_ok.sum(1).clamp(min=1)  # (R',)
                # Positives and negatives weigh alike; averaged over all R rows (the rows left out
                # count as 0), so the term does not grow as more targets enter the pool.
                loss = loss + c.ctr_weight * (pos_bce + neg_bce).sum() / R
        return loss
